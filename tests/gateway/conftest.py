"""Fixtures of the routing / Vertex / fault tests (issue 4); helpers are in gw_support.py.

* `sa_file`: a service-account JSON (fresh RSA key) whose `token_uri` is the
  fake's `POST /token`, so google-auth's real refresh path runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.testing.credentials import write_service_account_file


@pytest.fixture
def sa_file(tmp_path: Path, fake: Any) -> Path:
    return write_service_account_file(tmp_path / "sa.json", fake.url + "/token", project_id="proj-a")
