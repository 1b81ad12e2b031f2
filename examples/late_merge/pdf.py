# Produces one "PDF" (a text file in the run's folder) and outputs its name.
import os

import orch

ctx = orch.start()
name = f"{ctx.node}.pdf"
folder = os.environ.get("ORCH_RUN_DIR", ".")
with open(os.path.join(folder, name), "w") as f:
    f.write(f"%PDF {ctx.inputs['title']}\n")
ctx.output({"file": name, "title": ctx.inputs["title"]})
