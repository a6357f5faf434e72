"""What a user sees or a log keeps never carries a URL's query string (a SAS token's signature)."""

from __future__ import annotations

import logging

from azure.core.exceptions import HttpResponseError

from tasks.azureml.client import explain
from tasks.engine import child
from tasks.errors import redact

SAS = "https://acct.blob.core.windows.net/c/models/x/config.json?sv=2021-08-06&sr=c&sp=rl&sig=AbC%2Fd%3D"


def test_a_url_keeps_its_path_and_loses_its_query():
    said = redact(f"could not read {SAS} (403)")
    assert said == "could not read https://acct.blob.core.windows.net/c/models/x/config.json?<redacted> (403)"


def test_a_signature_outside_a_url_is_masked():
    assert "AbC" not in redact("sas_token=sv=2021&sig=AbC%2Fd%3D&sp=r")


def test_azure_errors_shown_to_the_user_are_redacted():
    error = explain(HttpResponseError(message=f"Server failed to authenticate the request {SAS}"), "downloading x")
    assert error is not None and "sig=" not in str(error) and "acct.blob.core.windows.net/c/models" in str(error)


def test_stage_log_lines_are_redacted(caplog):
    record = logging.LogRecord("azure.storage", logging.WARNING, __file__, 1, "GET %s", (SAS,), None)
    assert child._redacted(record) and "sig=" not in record.getMessage()
