"""Tasks that orch's workflow files compile to (see docs/files.md).

``each`` runs as the node ``ID.each``: it adds one copy of a task per item
of a list, ``ID[0]``, ``ID[1]``, ..., each wired ``ID.each -> ID[i] -> ID``
(an empty list wires ``ID.each -> ID``), under the promise
``shape(ID.each, ID, T*)`` the file declared.  ``gather`` runs as the node
``ID``: its output is the list of the copies' outputs, in item order.
"""

import orch


def each(items, template, prefix, into, inputs=None, max=None):
    """Add a copy of *template* (a task description) per item of *items*."""
    ctx = orch.start()
    if not isinstance(items, list):
        orch.fail(f"each {prefix}: the items must be a list, got {type(items).__name__}",
                  retry=False)
    if max is not None and len(items) > max:
        orch.fail(f"each {prefix}: {len(items)} items, more than the {max} allowed",
                  retry=False)
    for index, item in enumerate(items):
        node = f"{prefix}[{index}]"
        node_inputs = dict(inputs or {})
        node_inputs["item"] = item
        node_inputs["index"] = index
        ctx.add_node(node, task=template, inputs=node_inputs)
        ctx.add_edge(ctx.node, node)
        ctx.add_edge(node, into)
    if not items:
        ctx.add_edge(ctx.node, into)
    return len(items)


def gather(prefix):
    """The outputs of the copies ``PREFIX[i]`` upstream, in order of ``i``."""
    found = []
    for node, output in orch.start().upstream.items():
        if node.startswith(prefix + "[") and node.endswith("]"):
            index = node[len(prefix) + 1:-1]
            if index.isdigit():
                found.append((int(index), output))
    return [output for _, output in sorted(found)]
