# Breaks the workflow's promise on purpose: the workflow promised that
# `worker` adds no nodes, and here it tries to add one.  The runtime refuses
# the mutation, records the violation and ends the run as promise_broken;
# `sneaky` never enters the graph and `end` never runs.
import orch

ctx = orch.start()
ctx.log("about to add a node I promised not to add")
try:
    ctx.add_node("sneaky", script="worker.py")
except orch.OrchError as e:
    ctx.log(f"refused: {e}")
    raise
ctx.output("unreachable")
