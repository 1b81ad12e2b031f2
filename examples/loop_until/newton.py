# One step of Newton's method for sqrt(2): x' = (x + 2/x) / 2. The loop
# exits once `done` is true: the step moved the estimate by less than tol.
import orch

ctx = orch.start()
x = float(ctx.inputs["x"])
nxt = (x + 2.0 / x) / 2.0
delta = abs(nxt - x)
ctx.log(f"iteration {ctx.inputs['iteration']}: {x!r} -> {nxt!r} (moved {delta:.3g})")
ctx.output({"x": nxt, "delta": delta, "done": delta < float(ctx.inputs["tol"])})
