"""The functions of hello.yaml (python_fn tasks import them from here)."""


def print_test1():
    print('test1')


def print_test2():
    print('test2')
