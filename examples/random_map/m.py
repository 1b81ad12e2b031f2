# One map step: outputs the square of its input `i`.
import orch

ctx = orch.start()
ctx.output(ctx.inputs["i"] ** 2)
