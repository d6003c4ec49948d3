"""Stand-in for A1111 v1.10.1 ``modules/errors.py`` (written from the API, not the real code).

Only ``report``/``display``/``record_exception`` are provided.  Like the real
module they print to stderr and never raise.  ``exception_records`` keeps the
recorded exceptions so tests can assert that an exception was swallowed.
"""
import sys
import textwrap
import traceback

exception_records = []


def record_exception():
    _type, exc, tb = sys.exc_info()
    if exc is None:
        return
    if exception_records and exception_records[-1]["exception_object"] is exc:
        return
    exception_records.append({
        "exception": str(exc),
        "exception_object": exc,
        "traceback": traceback.extract_tb(tb),
    })
    # the real module keeps only the five most recent records
    del exception_records[:-5]


def report(message: str, *, exc_info: bool = False) -> None:
    record_exception()
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    record_exception()
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    print(*traceback.TracebackException.from_exception(e).format(), sep="", file=sys.stderr)


def run(code, task):
    try:
        code()
    except Exception as e:
        display(e, task)
