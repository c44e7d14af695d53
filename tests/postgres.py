"""A real PostgreSQL server for the tests: started from the Debian package's binaries on a free
loopback port in a temporary directory, or an existing one (``ENTITLE_TEST_POSTGRES``, a DSN
whose user may create databases). Each test gets a database of its own.

PostgreSQL refuses to run as root: as root the server runs as the package's ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from entitle.devenv.controlplane import free_port


def _bindir() -> Path | None:
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(found).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc_dir: Path | None = None
        self.base_dsn = os.environ.get("ENTITLE_TEST_POSTGRES")
        self.started = False

    def start(self) -> PostgresServer:
        if self.base_dsn:
            return self
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); "
                               "or set ENTITLE_TEST_POSTGRES to a DSN of a running server")
        as_user: list[str] = []
        if os.geteuid() == 0:
            # pytest's temporary directories are private to root (0700): the server's own
            # directory lives beside them, owned by the postgres user.
            self.directory = Path(tempfile.mkdtemp(prefix="entitle-postgres-"))
            shutil.chown(self.directory, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        data = self.directory / "pgdata"
        _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "entitle", "--no-sync",
              "-E", "UTF8"])
        self.port = free_port()
        # fsync stays on: the crash tests count on committed meaning durable.
        options = f"-p {self.port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
              str(self.directory / "server.log"), "-w", "-t", "60", "start"])
        self.as_user, self.bindir, self.data = as_user, bindir, data
        self.base_dsn = f"postgresql://entitle@127.0.0.1:{self.port}/postgres"
        self.started = True
        return self

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.base_dsn, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.base_dsn.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                            "stop"], capture_output=True)
            self.started = False
            if self.as_user:
                shutil.rmtree(self.directory, ignore_errors=True)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}")
