# A generic step: logs where it runs and outputs its node id and inputs.
import orch

ctx = orch.start()
ctx.log(f"step {ctx.node} (attempt {ctx.attempt}) got inputs {ctx.inputs}")
ctx.output({"node": ctx.node, "inputs": ctx.inputs})
