"""The exceptions an app raises, one function per case (see gen.py).

Imported by the apps gunicorn serves, so classes defined here print
module-qualified (`cases.AppErrors`) as an app's own would.
"""


class AppErrors(ExceptionGroup):
    """An app's own exception group class."""


class Ошибка(Exception):
    """A class whose name is not ASCII."""


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no")


def plain():
    raise RuntimeError("boom")


def no_message():
    raise ValueError()


def multiline():
    # The 2nd line looks like a frame, the 3rd like a traceback header.
    raise ValueError(
        'first line\n  File "x.py", line 1, in f\nTraceback (most recent call last):\nFake: last'
    )


def colon_quotes():
    raise KeyError('a: "b" \'c\'')


def url_message():
    raise Exception("GET http://db:5432/x failed: 'refused'")


def note():
    e = TypeError("bad type")
    e.add_note("while rendering /boom")
    raise e


def notes():
    e = ZeroDivisionError("division by zero")
    e.add_note("first note")
    e.add_note('second note\n  File "y.py", line 2, in g\nNoteError: looks like a class line')
    e.add_note("")
    raise e


def chained_context():
    try:
        {}["missing"]
    except KeyError:
        raise LookupError("while handling")


def chained_cause():
    try:
        int("x")
    except ValueError as e:
        raise RuntimeError("conversion failed") from e


def cause_never_raised():
    raise RuntimeError("outer") from ConnectionError("never raised, so no traceback")


def chain_of_three():
    try:
        try:
            1 / 0
        except ZeroDivisionError as e:
            raise ValueError("middle") from e
    except ValueError:
        raise LookupError("last")


def os_error():
    # gunicorn's sync worker takes an OSError for a socket error: it logs
    # "Socket error processing request." and closes without answering.
    raise FileNotFoundError(2, "No such file or directory", "/data/x")


def group():
    raise ExceptionGroup(
        "outer",
        [
            ValueError("a"),
            ExceptionGroup("inner", [TypeError("b"), KeyError("c")]),
        ],
    )


def group_subclass():
    raise AppErrors("many failures", [ValueError("x"), RuntimeError("y")])


def group_after_error():
    try:
        raise ConnectionError("first")
    except ConnectionError:
        raise ExceptionGroup("then a group", [ValueError("v")])


def error_after_group():
    try:
        group()
    except ExceptionGroup:
        raise RuntimeError("handling the group failed")


def group_with_chained_member():
    try:
        raise KeyError("k")
    except KeyError as e:
        inner = ValueError("member")
        inner.__cause__ = e
        try:
            raise inner
        except ValueError as v:
            raise ExceptionGroup("chained member", [v])


def long_message():
    raise ValueError("x" * 12000)


def module_qualified():
    from django.db.utils import OperationalError

    raise OperationalError("no such table: shop_order")


def local_class():
    class Boom(Exception):
        pass

    raise Boom("defined in a function")


def unicode_class():
    raise Ошибка("сообщение: ü")


def bad_str():
    raise BadStr()


def syntax_error():
    compile("x = 1 +* 2\n", "<template>", "exec")


def recursion():
    def f(n):
        return f(n + 1)

    f(0)


def fake_chain_in_message():
    raise ValueError(
        "start\n\nDuring handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "z.py", line 9, in h\nFakeError: injected'
    )


CASES = {
    name: fn
    for name, fn in list(globals().items())
    if callable(fn) and not isinstance(fn, type) and not name.startswith("_")
}
