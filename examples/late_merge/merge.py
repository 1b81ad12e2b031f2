# Merges every PDF the rule collected, in the order they were added.
import os

import orch

ctx = orch.start()
folder = os.environ.get("ORCH_RUN_DIR", ".")
parts = []
for name in ctx.inputs["pdfs"]:
    with open(os.path.join(folder, name)) as f:
        parts.append(f.read())
with open(os.path.join(folder, "book.pdf"), "w") as f:
    f.write("".join(parts))
ctx.output({"merged": ctx.inputs["pdfs"]})
