"""Where the project's MLflow artifacts live: `mlartifacts/`, recorded RELATIVE to the project root.

MLflow makes a relative experiment location absolute when it creates the experiment
(`SqlAlchemyStore.create_experiment` -> `resolve_uri_if_local`, against the working directory),
and every URI derived from it inherits that prefix: runs (`<location>/<run id>/artifacts`),
logged models (`<location>/models/<model id>/artifacts`) and registered versions
(`storage_location`). A copied or moved project would point into the old clone. So, for the
project's own `mlruns.db` only, the experiment's location is rewritten to `mlartifacts` in the
database right after MLflow creates it; what derives from it stays relative, and MLflow's
`LocalArtifactRepository` resolves it against the working directory, which is the project root
for every stage (DVC), the flow and `make mlflow-ui`. Measured with mlflow 3.17: logging,
`download_artifacts`, `models:/<name>@<alias>` and the UI's artifact views all work from a copy.

A database written before this change holds absolute `file://.../mlartifacts` URIs; `relativize`
rewrites them (every table that stores one) when they point into this project or into a project
that is gone, and leaves them alone when they point into another existing clone.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

ARTIFACT_DIR = "mlartifacts"  # the location stored in the database, relative to the project root
DEFAULT_DIR = "mlruns"  # MLflow's own default, the location of its "Default" experiment

# every column of MLflow's schema that holds an artifact URI derived from an experiment's location
_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def local_path(location: str) -> Path | None:
    """The absolute path of a `file://` URI or absolute path; None for anything else
    (a relative path, `mlflow-artifacts:/`, `s3://`, ...)."""
    parsed = urlparse(location)
    if parsed.scheme == "file" and not parsed.netloc:
        return Path(url2pathname(parsed.path))
    return Path(location) if not parsed.scheme and Path(location).is_absolute() else None


def is_relative(location: str) -> bool:
    """Whether MLflow resolves `location` against the working directory."""
    return not urlparse(location).scheme and not Path(location).is_absolute()


def local_root(location: str) -> Path | None:
    """The `mlartifacts` or `mlruns` folder an absolute location is (or is in), else None:
    `file:///x/mlartifacts` -> /x/mlartifacts, `/x/mlruns/0` ("Default" experiment) -> /x/mlruns."""
    path = local_path(location)
    if path is None:
        return None
    return next((p for p in (path, *path.parents) if p.name in (ARTIFACT_DIR, DEFAULT_DIR)), None)


def should_relativize(location: str, project: Path) -> bool:
    """Whether an absolute location in a `mlartifacts` (or `mlruns`) folder is to be made relative:
    the folder is this project's, or a project's that no longer exists (the database was copied
    or moved here). Another existing clone's folder stays absolute."""
    root = local_root(location)
    return root is not None and (root == project / root.name or not root.exists())


def relativize(db: Path, project: Path) -> dict[str, int]:
    """Rewrite, in the SQLite database `db`, every URI under an experiment location that
    `should_relativize` to `<folder name>/...` (`mlartifacts/<run id>/artifacts`), both the path
    and the `file://` form; returns {old folder: values changed}. One transaction: readers see
    the old or the new URIs, never a mix."""
    changed: dict[str, int] = {}
    with closing(sqlite3.connect(db)) as con, con:
        rows = con.execute("SELECT DISTINCT artifact_location FROM experiments").fetchall()
        roots = {local_root(loc) for (loc,) in rows if loc and should_relativize(loc, project)}
        for root in sorted(r for r in roots if r is not None):
            changed[str(root)] = sum(
                _replace_prefix(con, table, column, prefix, root.name)
                for table, column in _COLUMNS
                for prefix in {str(root), root.as_uri()}
            )
    return changed


def _replace_prefix(con: sqlite3.Connection, table: str, column: str, old: str, new: str) -> int:
    """`old` -> `new` at the start of `table.column` where `old` is a whole path prefix."""
    n = len(old)
    cur = con.execute(
        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
        f"WHERE substr({column}, 1, ?) = ? "
        f"AND (length({column}) = ? OR substr({column}, ?, 1) = '/')",
        (new, n + 1, n, old, n, n + 1),
    )
    return cur.rowcount
