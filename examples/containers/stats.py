"""The Python half of the `containers` example: runs in the image
`localhost/orch-python`, where orch mounts its helper (`/orch/helper`) and
this folder (`/orch/workflow`), both on PYTHONPATH."""


def summary(numbers):
    """Count, sum, mean and maximum of a list of numbers."""
    return {
        "count": len(numbers),
        "sum": sum(numbers),
        "mean": sum(numbers) / len(numbers),
        "max": max(numbers),
    }
