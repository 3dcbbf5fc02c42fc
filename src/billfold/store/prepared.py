"""Statements of the hot path, compiled once and run on the driver's own cursor.

A SQLAlchemy Core statement that is executed costs its execution context (parameters
processed, a cursor wrapped, a Result and its Rows built) more than SQLite takes to run
it: about 35 µs a statement, where a one-off charge runs a dozen (docs/DECISIONS.md,
118). `Prepared` keeps the statement as Core builds it, compiles it once per dialect, and
then does what SQLAlchemy would do, no more: the bind values through each type's bind
processor, the result values through each column's result processor, the rows as named
tuples, errors raised as SQLAlchemy's own. So types such as UTCDateTime read and write
exactly as they do elsewhere, and a statement that cannot be run this way (a parameter
expanded at run time, an IN of a list) is refused when it is compiled, not mis-run.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, String, any_, bindparam, literal
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.expression import Executable

from billfold.store.bulk import on_driver_cursor

Processor = Callable[[Any], Any] | None
T = TypeVar("T")


def one_of(column: Any, values: Sequence[Any]) -> Any:
    """`column IN (values)` for constant values, as parameters of their own: `in_` of a
    tuple would make one parameter that is expanded, and the SQL built, on every call."""
    return column.in_([literal(value, column.type) for value in values])


def any_of(column: Any, name: str) -> Any:
    """`column = ANY(:name)`, one array parameter of strings for any number of values
    (PostgreSQL only): the same SQL whatever the count, so it is compiled once."""
    return column == any_(bindparam(name, type_=postgresql.ARRAY(String)))


class _Form:
    """The statement compiled for one dialect."""

    __slots__ = ("binds", "columns", "defaults", "names", "required", "results", "row", "sql")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        for name, bind in compiled.binds.items():
            if bind.expanding:  # Its SQL would change with its value on every call.
                raise ValueError(f"{name}: an expanding parameter cannot be prepared (one_of)")
        self.sql: str = compiled.string
        positional = dialect.paramstyle in ("qmark", "numeric", "format")
        self.names: tuple[str, ...] | None = tuple(compiled.positiontup) if positional else None
        self.defaults: dict[str, Any] = dict(compiled.params)
        self.required = frozenset(name for name, bind in compiled.binds.items() if bind.required)
        binds: dict[str, Processor] = {}
        for name in self.defaults:
            bind = compiled.binds.get(name)
            kind = bind.type if bind is not None else None
            binds[name] = (
                None if kind is None else kind.dialect_impl(dialect).bind_processor(dialect)
            )
        self.binds = {name: p for name, p in binds.items() if p is not None}
        self.columns = [column.type for column in statement.exported_columns]
        names = [column.key for column in statement.exported_columns]
        self.row: Any = namedtuple("Row", names, rename=True)  # type: ignore[misc]
        self.results: list[Processor] | None = None  # Known once the driver has answered.

    def params(self, values: Mapping[str, Any]) -> Any:
        if not self.required <= values.keys():
            raise KeyError(f"no value for {sorted(self.required - values.keys())}")
        merged = {**self.defaults, **values}
        for name, process in self.binds.items():
            merged[name] = process(merged[name])
        if self.names is None:
            return merged
        return tuple(merged[name] for name in self.names)

    def rows(self, cursor: Any, dialect: Any) -> list[Any]:
        fetched = cursor.fetchall()
        if not fetched:
            return []
        if self.results is None:
            self.results = [
                kind.dialect_impl(dialect).result_processor(dialect, described[1])
                for kind, described in zip(self.columns, cursor.description, strict=True)
            ]
        make = self.row._make
        results = self.results
        if not any(results):
            return [make(values) for values in fetched]
        return [
            make(value if p is None else p(value) for p, value in zip(results, values, strict=True))
            for values in fetched
        ]


class Prepared:
    """A Core statement of the hot path: built once, run on the driver's cursor."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[str, _Form] = {}

    def _form(self, connection: Connection) -> _Form:
        dialect = connection.dialect
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _Form(self.statement, dialect)
        return form

    def rows(self, connection: Connection, values: Mapping[str, Any] | None = None) -> list[Any]:
        """The statement's rows (named tuples; none for a statement without RETURNING),
        run in the connection's transaction."""
        form = self._form(connection)
        return self._run(
            connection,
            form,
            values,
            lambda cursor: (
                [] if cursor.description is None else form.rows(cursor, connection.dialect)
            ),
        )

    def first(self, connection: Connection, values: Mapping[str, Any] | None = None) -> Any:
        """The first row, or None."""
        found = self.rows(connection, values)
        return found[0] if found else None

    def count(self, connection: Connection, values: Mapping[str, Any] | None = None) -> int:
        """Runs a statement without RETURNING; the number of rows it changed."""
        return self._run(connection, self._form(connection), values, lambda c: int(c.rowcount))

    @staticmethod
    def _run(
        connection: Connection,
        form: _Form,
        values: Mapping[str, Any] | None,
        read: Callable[[Any], T],
    ) -> T:
        params = form.params(values or {})

        def run(cursor: Any) -> T:
            cursor.execute(form.sql, params)
            return read(cursor)

        return on_driver_cursor(connection, form.sql, run)
