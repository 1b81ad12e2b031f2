# Grows the graph as it runs: while depth > 0, each node adds `fanout` children
# (<node>.0, <node>.1, ...) running this same script with depth - 1.  From the
# root node `root` with the defaults (depth 2, fanout 2) this builds
# root -> root.0, root.1 -> root.0.0, root.0.1, root.1.0, root.1.1.
import orch

ctx = orch.start()
inputs = ctx.inputs or {}
depth = inputs.get("depth", 2)
fanout = inputs.get("fanout", 2)

children = []
if depth > 0:
    for i in range(fanout):
        child = ctx.add_node(f"{ctx.node}.{i}", name="expand", script="expand.py",
                             inputs={"depth": depth - 1, "fanout": fanout})
        ctx.add_edge(ctx.node, child)
        children.append(child)

ctx.output({"depth": depth, "children": children})
