# Picks a branch at random and adds only that branch, joined at the registered
# node `end` (the promise shape(choose, end, (left_1 → left_2) | right) holds it):
#   left:  choose -> left_1 -> left_2 -> end
#   right: choose -> right -> end
# Set ORCH_EXAMPLE_SEED to make the choice reproducible.
import os
import random

import orch

ctx = orch.start()
seed = os.environ.get("ORCH_EXAMPLE_SEED")
rng = random.Random(int(seed)) if seed else random.Random()
branch = rng.choice(["left", "right"])
ctx.log(f"chose the {branch} branch")

chain = ["left_1", "left_2"] if branch == "left" else ["right"]
for node in chain:
    ctx.add_node(node, script="step.py")

path = [ctx.node, *chain, "end"]
for a, b in zip(path, path[1:]):
    ctx.add_edge(a, b)

ctx.output({"branch": branch})
