"""The OpenAPI document as a product (issue 11, item 7): stable operationIds, an example on
every body, every problem type the code can emit documented and resolvable, docs pages
served offline."""

from __future__ import annotations

import ast
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from custody import problem_types as pt
from custody.approvals import RefusalReason
from custody.examples import EXAMPLES
from custody.governance import GovernanceErrorKind

ROOT = Path(__file__).resolve().parents[2]
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # noqa: ANN001, ANN201
    from tests.api.conftest import make_api

    gen = make_api(tmp_path_factory.mktemp("openapi"))
    api = next(gen)
    yield api
    gen.close()


def _ops(doc: dict) -> list[tuple[str, str, dict]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_operation_ids_are_stable_camel_case_and_unique(served) -> None:  # noqa: ANN001
    doc = served.client.get("/openapi.json").json()
    ids = [op.get("operationId", "") for _, _, op in _ops(doc)]
    generated = [
        i for i in ids if not CAMEL.match(i) or re.search(r"(Get|Post|Put|Patch|Delete)$|V1", i)
    ]
    assert generated == [], f"generated-looking operationIds: {generated}"
    assert len(ids) == len(set(ids)), "duplicate operationIds"
    for want in ("createSignRequest", "getSignRequest", "listSignRequests", "listKeys", "getKey"):
        assert want in ids


def test_operation_id_derivation_covers_new_routes() -> None:
    """A route added later gets its id from its function name, no table edit needed."""
    from fastapi import FastAPI

    from api.openapi import operation_id

    app = FastAPI(generate_unique_id_function=operation_id)

    @app.patch("/v1/keys/{key_id}")
    async def update_key_labels(key_id: str) -> dict[str, str]:
        return {}

    ids = [op["operationId"] for p in app.openapi()["paths"].values() for op in p.values()]
    assert ids == ["updateKeyLabels"]


def test_every_operation_has_summary_examples_and_documented_problems(served) -> None:  # noqa: ANN001
    doc = served.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    missing: list[str] = []

    def has_example(media: dict) -> bool:
        if "example" in media or media.get("examples"):
            return True
        ref = media.get("schema", {}).get("$ref", "")
        return bool(schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples"))

    for method, path, op in _ops(doc):
        name = f"{method.upper()} {path}"
        summary = op.get("summary", "")
        if not summary or summary.lower() == op["operationId"].lower():
            missing.append(f"{name}: summary")
        for media in op.get("requestBody", {}).get("content", {}).values():
            if not has_example(media):
                missing.append(f"{name}: request example")
        for code, resp in op["responses"].items():
            assert "X-Request-Id" in resp.get("headers", {}), name
            for ctype, media in resp.get("content", {}).items():
                if not has_example(media):
                    missing.append(f"{name} {code} {ctype}: response example")
                if int(code) >= 400:
                    assert ctype == "application/problem+json", name
                    assert media["example"]["type"].startswith(pt.TYPE_PREFIX), name
        if op.get("security"):
            assert "401" in op["responses"], name
    assert missing == []
    ops = {op["operationId"]: op for _, _, op in _ops(doc)}
    created = ops["createSignRequest"]
    assert any(p.get("name") == "Idempotency-Key" for p in created["parameters"])
    assert {"Location", "Retry-After"} <= set(created["responses"]["202"]["headers"])
    assert "Idempotent-Replayed" in created["responses"]["201"]["headers"]
    assert {"traceparent", "X-Request-Id"} <= set(doc["components"]["parameters"])
    assert list(doc["components"]["securitySchemes"]) == ["bearerAuth"]
    bearer = doc["components"]["securitySchemes"]["bearerAuth"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    assert created["security"] == [{"bearerAuth": []}]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_validates_against_its_model(name: str) -> None:
    import custody.models as models

    getattr(models, name).model_validate(EXAMPLES[name])


def emitted_slugs() -> set[str]:
    """Every problem slug the coordinator's code can emit: literal ``Problem(status, "slug",
    ...)`` and ``problem_doc("slug", ...)`` calls, the HTTP-level slugs, and the enums whose
    values become slugs (governance refusals, approval refusals)."""
    from api.problems import _HTTP_SLUGS

    found: set[str] = {slug for slug, _ in _HTTP_SLUGS.values()} | {"http-error"}
    for f in sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = getattr(node.func, "id", getattr(node.func, "attr", None))
            args = node.args
            pos = {"Problem": 1, "problem_doc": 0}.get(fn or "")
            if pos is None or len(args) <= pos:
                continue
            arg = args[pos]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.IfExp):  # "a" if cond else "b"
                found |= {x.value for x in (arg.body, arg.orelse) if isinstance(x, ast.Constant)}
    found |= {k.value for k in GovernanceErrorKind} | {r.value for r in RefusalReason}
    return found


def test_every_emitted_problem_type_is_catalogued_and_on_the_page() -> None:
    slugs = emitted_slugs()
    assert {"policy-denied", "validation", "not-found", "approval-expired"} <= slugs
    assert sorted(slugs - set(pt.CATALOGUE)) == []
    page = (ROOT / "docs" / "PROBLEMS.md").read_text()
    assert page == pt.markdown(), "docs/PROBLEMS.md is stale: python -m custody.problem_types"
    for slug in slugs:
        assert f'<a id="{slug}"></a>`{slug}`' in page


def test_every_problem_type_resolves_on_the_coordinator(served) -> None:  # noqa: ANN001
    listed = served.client.get("/problems").json()["items"]
    assert {p["slug"] for p in listed} == set(pt.CATALOGUE)
    for slug in emitted_slugs():
        for ref in (slug, pt.TYPE_PREFIX + slug):
            r = served.client.get(f"/problems/{ref}")
            assert r.status_code == 200, ref
            body = r.json()
            assert body["type"] == pt.TYPE_PREFIX + slug and body["meaning"]
    html = served.client.get("/problems/policy-denied", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html")
    assert 'id="policy-denied"' in html.text
    nope = served.client.get("/problems/no-such-thing")
    assert nope.status_code == 404 and nope.json()["type"] == pt.TYPE_PREFIX + "not-found"


def test_an_error_answer_names_a_type_that_resolves(served) -> None:  # noqa: ANN001
    r = served.client.get("/v1/keys/key_nope", headers=served.h("admin"))
    assert r.status_code == 404
    t = r.json()["type"]
    assert served.client.get(f"/problems/{t}").json()["status"] == 404


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_outside(served, page: str) -> None:  # noqa: ANN001
    r = served.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the docs page names an external URL"
    parser = _Refs()
    parser.feed(r.text)
    assert parser.refs, page
    for ref in parser.refs:
        asset = served.client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 1000 or ref.endswith(".png")
    assert "/openapi.json" in r.text


def test_integrator_guide_code_compiles_and_names_real_api() -> None:
    """docs/INTEGRATORS.md: every Python block compiles; every SDK name it imports exists;
    every path it curls is in the OpenAPI document."""
    import custody.client as sdk
    import custody.webhooks_verify as wv
    from api.openapi import DESCRIPTION

    text = (ROOT / "docs" / "INTEGRATORS.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for code in blocks:
        compile(code, "INTEGRATORS.md", "exec")
    for mod, names in re.findall(r"from (custody\.\w+) import ([\w, ]+)", text):
        target = {"custody.client": sdk, "custody.webhooks_verify": wv}[mod]
        for name in names.split(","):
            assert hasattr(target, name.strip()), name
    assert "docs/INTEGRATORS.md" in DESCRIPTION
