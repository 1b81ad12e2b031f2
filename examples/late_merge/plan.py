# Picks how many chapters the document has and adds a node per chapter
# (task `chapter`). ORCH_EXAMPLE_N forces the number; ORCH_EXAMPLE_SEED
# seeds the choice.
import os
import random

import orch

ctx = orch.start()
seed = os.environ.get("ORCH_EXAMPLE_SEED")
rng = random.Random(int(seed)) if seed else random.Random()
n = int(os.environ.get("ORCH_EXAMPLE_N") or rng.randint(1, 4))
for i in range(n):
    ctx.add_node(f"chapter_{i}", name="chapter", script="chapter.py",
                 inputs={"i": i, "appendix": rng.random() < 0.5})
    ctx.add_edge(ctx.node, f"chapter_{i}")
ctx.output({"chapters": n})
