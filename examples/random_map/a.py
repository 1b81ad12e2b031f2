# Map with a random width: adds k nodes M_i (computing i**2), each wired
# A -> M_i -> B; with k = 0 it adds the single edge A -> B.  The workflow
# registered A and B with the promise shape(A, B, M*): B waits for this
# region, and the runtime checks that what is added here is an instance.
# ORCH_EXAMPLE_K forces k; ORCH_EXAMPLE_SEED seeds the choice.
import os
import random

import orch

ctx = orch.start()
seed = os.environ.get("ORCH_EXAMPLE_SEED")
rng = random.Random(int(seed)) if seed else random.Random()
k = rng.randint(0, 8)
if os.environ.get("ORCH_EXAMPLE_K"):
    k = int(os.environ["ORCH_EXAMPLE_K"])
ctx.log(f"mapping over {k} items")

for i in range(k):
    ctx.add_node(f"M_{i}", name="M", script="m.py", inputs={"i": i})
    ctx.add_edge(ctx.node, f"M_{i}")
    ctx.add_edge(f"M_{i}", "B")
if k == 0:
    ctx.add_edge(ctx.node, "B")  # the empty instance of M*

ctx.output({"k": k})
