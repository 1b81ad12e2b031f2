# Reduces the map: sums the outputs of the M_i nodes, which were added at run
# time and reach B as its upstream outputs.
import orch

ctx = orch.start()
items = [out for node, out in sorted(ctx.upstream.items()) if node.startswith("M_")]
ctx.output({"sum": sum(items), "count": len(items)})
