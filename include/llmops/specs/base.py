"""Building blocks every part of a pipeline spec uses: strict models, identifiers, a source's
governance tags and data contract."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


Identifier = Annotated[
    str,
    Field(pattern=IDENTIFIER.pattern, description="A SQL-safe identifier: letters, digits, underscore."),
]


#: Airflow's rule for connection ids (airflow.models.connection.RE_SANITIZE_CONN_ID), in ASCII.
ConnId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=250, description="An Airflow connection id."),
]


def reject_parent_segments(value: str) -> str:
    """Refuse a path or URI with a `..` segment: it would leave the folder the field is meant for."""
    if ".." in value.replace("\\", "/").split("/"):
        raise ValueError(f"{value!r}: a '..' segment is not allowed (name the folder itself)")
    return value


class StrictModel(BaseModel):
    # Unknown fields are typos; NaN and infinity make any comparison pass or fail silently
    # (a gate with `max: .nan` could never fail).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Governance(StrictModel):
    """Who owns a source and what it may be used for; travels with every derived snapshot."""

    data_owner: str
    purposes: list[str] = Field(min_length=1)
    lawful_basis: Literal[
        "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"
    ]
    classification: Literal["public", "internal", "confidential", "restricted"] = "confidential"
    retention_days: int = Field(default=365, gt=0)
    consent_scope: list[str] | None = Field(
        default=None,
        description="With lawful_basis 'consent': the purposes data subjects consented to.",
    )

    @model_validator(mode="after")
    def _consent_has_scope(self) -> Governance:
        if self.lawful_basis == "consent" and not self.consent_scope:
            raise ValueError("lawful_basis 'consent' needs a consent_scope (the purposes consented to)")
        return self

    def allows(self, purpose: str) -> str | None:
        """Why this source may not serve `purpose`, or None when it may."""
        if purpose not in self.purposes:
            return f"purpose '{purpose}' is not among its purposes ({', '.join(self.purposes)})"
        if self.lawful_basis == "consent" and purpose not in (self.consent_scope or []):
            return f"purpose '{purpose}' is outside the consent scope ({', '.join(self.consent_scope or [])})"
        return None


ContractType = Literal["string", "int", "float", "bool", "timestamp", "date"]


class ColumnContract(StrictModel):
    """What a source promises about one column."""

    type: ContractType = "string"
    nullable: bool = True
    unique: bool = False
    allowed_values: list[str] | None = None
    pattern: str | None = Field(
        default=None, description="A regular expression every non-null value matches."
    )
    max_length: int | None = Field(default=None, gt=0)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return value


class Freshness(StrictModel):
    column: Identifier
    max_age_hours: float = Field(gt=0)


class DataContract(StrictModel):
    """A source's promise, checked before any expectation runs.

    Row-level promises (type, nullability, allowed values, pattern, length) quarantine the rows that
    break them; table-level ones (columns present, uniqueness, freshness, minimum rows) fail the run.
    """

    columns: dict[Identifier, ColumnContract] = {}
    freshness: Freshness | None = None
    min_rows: int = Field(default=0, ge=0)
    allow_extra_columns: bool = True


def one_of(value: str, allowed: tuple[str, ...]) -> str:
    """Refuse a name outside `allowed` the way pydantic words a Literal (the list is the catalogue's)."""
    if value not in allowed:
        quoted = [repr(a) for a in allowed]
        expected = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


def check_read_only_query(query: str) -> None:
    """A spec's `query` must only read: one SELECT (or WITH ... SELECT) statement that writes no
    table. A real SQL parser (OpenLineage's, which Airflow's lineage uses too) finds the tables a
    statement writes, so `WITH d AS (DELETE ... RETURNING *) SELECT ...` and `SELECT ... INTO t` are
    refused as well; sources are also read in read-only sessions (`llmops.ingest.sql`)."""
    text = query.strip().rstrip(";").strip()
    head = text.split(None, 1)[0].upper() if text else ""
    if head not in ("SELECT", "WITH"):
        raise ValueError("query must be a single SELECT (or WITH ... SELECT) statement")
    if ";" in text:
        raise ValueError("query must be a single statement (no ';' inside)")
    from openlineage_sql import parse

    try:
        parsed = parse([text], dialect="generic")
    except Exception:  # the parser's message quotes the statement: not repeated
        parsed = None
    written = sorted({t.qualified_name for t in (parsed.out_tables if parsed else [])})
    if written:
        raise ValueError(f"query must only read, but it writes to {', '.join(written)}")
