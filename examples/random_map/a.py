# Map/reduce with a random width: adds k nodes M_i (computing i**2) and a node B
# that sums their outputs.  B's inputs reference every M_i, which implies the
# edges M_i -> B.  ORCH_EXAMPLE_K forces k; ORCH_EXAMPLE_SEED seeds the choice.
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

items = [orch.output_ref(f"M_{i}") for i in range(k)]
ctx.add_node("B", name="B", script="b.py", inputs={"items": items})
if k == 0:
    ctx.add_edge(ctx.node, "B")  # no references, so no implied edge

ctx.output({"k": k})
