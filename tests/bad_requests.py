"""Requests a client can get wrong, and the answer each must get: a 4xx with a JSON error.

Shared by the Flask app tests, the real `serve` tests and the container tests, so the same
table is checked through Flask alone, through nginx + gunicorn, and inside the image.
Each row: (id, method, path, headers, body, status, error code). The rows of NGINX_ONLY
are answered by nginx before any worker sees the request; the Flask app alone has no such
limits, so test_app.py leaves them out (each_app_bad_request).
"""

import json

import pytest
import requests

JSON = {"Content-Type": "application/json"}
PLAIN = {"Content-Type": "text/plain"}
LINES = {"Content-Type": "application/jsonlines"}

BAD_REQUESTS = [
    ("json cut short", "POST", "/invocations", JSON, b'{"text": "Alice', 400, "invalid_json"),
    ("json empty body", "POST", "/invocations", JSON, b"", 400, "invalid_json"),
    ("json not an object: array", "POST", "/invocations", JSON, b'["Alice"]', 400, "invalid_body"),
    ("json not an object: string", "POST", "/invocations", JSON, b'"Alice"', 400, "invalid_body"),
    ("json empty object", "POST", "/invocations", JSON, b"{}", 400, "invalid_body"),
    ("json misspelt field", "POST", "/invocations", JSON, b'{"txt": "Alice"}', 400, "invalid_body"),
    (
        "json two forms at once",
        "POST",
        "/invocations",
        JSON,
        b'{"text": "Alice", "texts": ["Bob"]}',
        400,
        "invalid_body",
    ),
    ("text is a number", "POST", "/invocations", JSON, b'{"text": 5}', 400, "invalid_field"),
    ("text is null", "POST", "/invocations", JSON, b'{"text": null}', 400, "invalid_field"),
    (
        "text is an array",
        "POST",
        "/invocations",
        JSON,
        b'{"text": ["Alice"]}',
        400,
        "invalid_field",
    ),
    (
        "texts is a string",
        "POST",
        "/invocations",
        JSON,
        b'{"texts": "Alice"}',
        400,
        "invalid_field",
    ),
    (
        "texts holds a number",
        "POST",
        "/invocations",
        JSON,
        b'{"texts": ["Alice", 3]}',
        400,
        "invalid_field",
    ),
    (
        "texts holds an array",
        "POST",
        "/invocations",
        JSON,
        b'{"texts": [["Alice"]]}',
        400,
        "invalid_field",
    ),
    (
        "input is an object",
        "POST",
        "/invocations",
        JSON,
        b'{"input": {"text": "Alice"}}',
        400,
        "invalid_field",
    ),
    (
        "json with invalid utf-8",
        "POST",
        "/invocations",
        JSON,
        b'{"text": "Alic\xff"}',
        400,
        "invalid_utf8",
    ),
    (
        "plain text with invalid utf-8",
        "POST",
        "/invocations",
        PLAIN,
        b"Alice \xc3\x28",
        400,
        "invalid_utf8",
    ),
    ("json nested too deeply", "POST", "/invocations", JSON, b"[" * 200_000, 400, "json_too_deep"),
    (
        "json field nested too deeply",
        "POST",
        "/invocations",
        JSON,
        b'{"text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        400,
        "json_too_deep",
    ),
    (
        "lone surrogate",
        "POST",
        "/invocations",
        JSON,
        b'{"text": "Alice \\ud800"}',
        400,
        "invalid_text",
    ),
    (
        "jsonlines with a broken line",
        "POST",
        "/invocations",
        LINES,
        b'"Alice"\n{"text": \n',
        400,
        "invalid_json",
    ),
    (
        "jsonlines object without text",
        "POST",
        "/invocations",
        LINES,
        b'{"body": "Alice"}\n',
        400,
        "invalid_body",
    ),
    ("jsonlines record is a number", "POST", "/invocations", LINES, b"42\n", 400, "invalid_field"),
    (
        "body over the payload limit",
        "POST",
        "/invocations",
        PLAIN,
        b"a" * (7 * 1024 * 1024),
        413,
        "payload_too_large",
    ),
    (
        "content type xml",
        "POST",
        "/invocations",
        {"Content-Type": "application/xml"},
        b"<text>Alice</text>",
        415,
        "unsupported_content_type",
    ),
    (
        "content type form (curl -d default)",
        "POST",
        "/invocations",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"text=Alice",
        415,
        "unsupported_content_type",
    ),
    (
        "content type missing",
        "POST",
        "/invocations",
        {},
        b'{"text": "Alice"}',
        415,
        "unsupported_content_type",
    ),
    (
        "charset latin-1",
        "POST",
        "/invocations",
        {"Content-Type": "text/plain; charset=latin-1"},
        b"Alice",
        415,
        "unsupported_charset",
    ),
    (
        "accept xml",
        "POST",
        "/invocations",
        {**JSON, "Accept": "application/xml"},
        b'{"text": "Alice"}',
        406,
        "not_acceptable",
    ),
    (
        "accept image",
        "POST",
        "/invocations",
        {**JSON, "Accept": "image/png"},
        b'{"text": "Alice"}',
        406,
        "not_acceptable",
    ),
    ("GET /invocations", "GET", "/invocations", {}, b"", 405, "method_not_allowed"),
    (
        "PUT /invocations",
        "PUT",
        "/invocations",
        JSON,
        b'{"text": "Alice"}',
        405,
        "method_not_allowed",
    ),
    ("POST /ping", "POST", "/ping", JSON, b"{}", 405, "method_not_allowed"),
    ("unknown path", "GET", "/predict", {}, b"", 404, "not_found"),
]

# nginx's limits on the request line and the headers: one line at most 16 KB, all of them
# at most four such buffers (nginx.conf, large_client_header_buffers).
NGINX_ONLY = [
    (
        "request line over 16 KB",
        "GET",
        "/invocations?" + "x" * 20_000,
        {},
        b"",
        414,
        "uri_too_long",
    ),
    (
        "header over 16 KB",
        "POST",
        "/invocations",
        {**JSON, "X-Big": "a" * 20_000},
        b'{"text": "Alice"}',
        431,
        "headers_too_large",
    ),
    (
        "cookie of 20 KB",
        "POST",
        "/invocations",
        {**JSON, "Cookie": "id=" + "b" * 20_000},
        b'{"text": "Alice"}',
        431,
        "headers_too_large",
    ),
    (
        "headers over 64 KB together",
        "POST",
        "/invocations",
        {**JSON, **{f"X-Big-{i}": "a" * 15_000 for i in range(5)}},
        b'{"text": "Alice"}',
        431,
        "headers_too_large",
    ),
]
BAD_REQUESTS += NGINX_ONLY

# Just inside those limits, and more than SageMaker sends (custom attributes of up to 1024
# characters): nginx and gunicorn both let this through to the app.
LARGE_HEADERS = {
    "X-Amzn-SageMaker-Custom-Attributes": "c" * 1024,
    "X-Big": "a" * 9_000,
    "Cookie": "id=" + "b" * 15_000,
    **{f"X-Many-{i}": str(i) for i in range(300)},
}
LONG_QUERY = "?" + "q" * 12_000


def check_error(status, headers, body, expected_status, expected_code):
    """Assert a client sees the expected status and a short JSON error, no traceback."""
    assert status == expected_status, (status, body[:300])
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == expected_code, error
    assert error["message"] and "Traceback" not in error["message"]
    assert len(body) < 1000


def _each(rows):
    """Parametrizes a test over rows: (name, method, path, headers, body, status, code)."""
    return pytest.mark.parametrize(
        "name,method,path,headers,body,status,code", rows, ids=[row[0] for row in rows]
    )


# Over HTTP, through nginx: the whole table.
each_bad_request = _each(BAD_REQUESTS)
# Through the Flask app alone.
each_app_bad_request = _each([row for row in BAD_REQUESTS if row not in NGINX_ONLY])


def send(base_url, method, path, headers, body):
    return requests.request(method, base_url + path, headers=headers, data=body, timeout=30)


def check_over_http(base_url, method, path, headers, body, status, code):
    """Send one row of the table to a running server and check its answer."""
    response = send(base_url, method, path, headers, body)
    check_error(response.status_code, response.headers, response.content, status, code)


def send_every_bad_request(base_url):
    for _, method, path, headers, body, _, _ in BAD_REQUESTS:
        send(base_url, method, path, headers, body)
