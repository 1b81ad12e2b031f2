# The first estimate of sqrt(2): the loop's `from`.
import orch

ctx = orch.start()
ctx.output({"x": float(ctx.inputs.get("x0", 1.0))})
