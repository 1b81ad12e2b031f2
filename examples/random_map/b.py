# The reduce step: `items` are the outputs of all M_i; outputs their sum and count.
import orch

ctx = orch.start()
items = ctx.inputs["items"]
ctx.output({"sum": sum(items), "count": len(items)})
