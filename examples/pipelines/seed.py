# The seed's `test` pipeline, unchanged but for its import line: a Python
# pipeline file in the Airflow style. orch evaluates it in a subprocess
# (with a time limit) and runs each callable as a Python function task.
#   cargo run --bin orch -- run examples/pipelines/seed.py
from orch import Pipeline, PythonTask

pipeline = Pipeline(name='test', schedule='0 0 * * * *')


def print_test1():
    print('test1')


def print_test2():
    print('test2')


task_1 = PythonTask('print_test1', python_callable=print_test1, pipeline=pipeline)
task_2 = PythonTask('print_test2', python_callable=print_test2, pipeline=pipeline)
task_1.set_downstream(task_2)
