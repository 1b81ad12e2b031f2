# One link of the durable chain: sleeps the given milliseconds, then outputs
# its node id and attempt.
import time

import orch

ctx = orch.start()
time.sleep(ctx.inputs.get("sleep_ms", 100) / 1000)
ctx.output({"node": ctx.node, "attempt": ctx.attempt})
