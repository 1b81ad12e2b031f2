# Writes a chapter, then adds the PDF producers it needs: its own, and an
# appendix when its input says so. Every producer runs the task `pdf`.
import orch

ctx = orch.start()
i = ctx.inputs["i"]
ctx.add_node(f"pdf_{i}", name="pdf", script="pdf.py", inputs={"title": f"chapter {i}"})
ctx.add_edge(ctx.node, f"pdf_{i}")
if ctx.inputs.get("appendix"):
    ctx.add_node(f"appendix_{i}", name="pdf", script="pdf.py",
                 inputs={"title": f"appendix {i}"})
    ctx.add_edge(ctx.node, f"appendix_{i}")
ctx.output({"chapter": i})
