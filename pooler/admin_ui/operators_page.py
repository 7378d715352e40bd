"""`/admin/operators` (owner only): every operator with role, status, assigned Pools, last
sign-in and second factor; create one with a temporary password (shown once, changed at
the first sign-in); per operator (`/admin/operators/{id}`): role and Pools, deactivate or
reactivate (their sessions end), reset the password (a new temporary one, shown once) and
delete. The rules (the last active owner stays) live in `pooler.store.operators`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from quart import Blueprint
from quart.wrappers import Response

from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.form_once import form_once
from pooler.admin_ui.pages import (
    Form,
    db,
    db_with_password,
    operator_required,
    read_form,
    redirect_to,
    render,
)
from pooler.store import operators, pools
from pooler.store.common import ConflictError, Conn, InvalidInputError, NotFoundError, StoreError
from pooler.store.models import Operator, Pool

HOME = "/admin/operators"


@dataclass(frozen=True, slots=True)
class OperatorsView:
    operators: list[Operator]
    pools_of: dict[UUID, list[str]]
    pools: list[Pool]


def operators_view(conn: Conn) -> OperatorsView:
    return OperatorsView(
        operators.list_operators(conn), operators.assigned_pools(conn), pools.list_pools(conn)
    )


def chosen_pools(form: Form) -> list[UUID]:
    try:
        return [UUID(value) for value in form.getlist("pool")]
    except ValueError:
        raise InvalidInputError("one of the chosen Pools does not exist") from None


def refused_status(exc: StoreError) -> int:
    return 409 if isinstance(exc, ConflictError) else 400


def operators_blueprint() -> Blueprint:
    bp = Blueprint("operators_page", __name__)

    async def listing(status: int = 200, **context: Any) -> Response:
        view = await db(operators_view)
        context.setdefault("error", None)
        context.setdefault("created", None)
        context.setdefault("form", {"email": "", "display_name": "", "role": "admin", "pools": []})
        return await render("operators.html", status, view=view, **context)

    async def detail(operator_id: UUID, status: int = 200, **context: Any) -> Response:
        def load(conn: Conn) -> tuple[Operator, OperatorsView]:
            return operators.get_operator(conn, operator_id), operators_view(conn)

        operator, view = await db(load)
        context.setdefault("error", None)
        context.setdefault("notice", None)
        context.setdefault("password", None)
        assigned = set(view.pools_of.get(operator.id, []))
        return await render(
            "operator.html", status, operator=operator, view=view, assigned=assigned, **context
        )

    @bp.get(HOME)
    @operator_required("owner")
    async def show(found: SignedIn) -> Response:
        return await listing()

    @bp.post(HOME)
    @operator_required("owner")
    async def create(found: SignedIn) -> Response:
        form = await read_form()
        once = form_once(found, form)
        email, name, role = form.get("email"), form.get("display_name"), form.get("role")
        typed = {"email": email, "display_name": name, "role": role, "pools": form.getlist("pool")}

        def create_once(conn: Conn) -> tuple[Operator, str]:
            once.claim(conn, "operator.create")
            operator, password = operators.create_operator_with_temporary_password(
                conn,
                email,
                role,
                display_name=name,
                pool_ids=chosen_pools(form),
                actor=found.operator.email,
            )
            once.made(conn, operator.id)
            return operator, password

        try:
            operator, password = await db_with_password(create_once)
        except StoreError as exc:
            return await listing(refused_status(exc), error=exc.message, form=typed)
        # Shown once, on this answer only (no redirect: it is nowhere to come back to).
        return await listing(created=(operator, password))

    @bp.get(f"{HOME}/<uuid:operator_id>")
    @operator_required("owner")
    async def show_one(found: SignedIn, operator_id: UUID) -> Response:
        return await detail(operator_id)

    async def change(
        found: SignedIn, operator_id: UUID, work: Any, notice: str | None = None
    ) -> Response:
        try:
            await db(work)
        except StoreError as exc:
            if isinstance(exc, NotFoundError):
                raise
            return await detail(operator_id, refused_status(exc), error=exc.message)
        if notice is None:
            return redirect_to(f"{HOME}/{operator_id}")
        return await detail(operator_id, notice=notice)

    @bp.post(f"{HOME}/<uuid:operator_id>/role")
    @operator_required("owner")
    async def role(found: SignedIn, operator_id: UUID) -> Response:
        form = await read_form()
        new_role, actor = form.get("role"), found.operator.email
        response = await change(
            found,
            operator_id,
            lambda conn: operators.set_role(conn, operator_id, new_role, actor=actor),
        )
        if operator_id == found.operator.id and response.status_code == 303:
            return redirect_to("/")  # an owner who stepped down no longer sees this page
        return response

    @bp.post(f"{HOME}/<uuid:operator_id>/pools")
    @operator_required("owner")
    async def assign(found: SignedIn, operator_id: UUID) -> Response:
        form = await read_form()
        actor = found.operator.email
        try:
            pool_ids = chosen_pools(form)
        except StoreError as exc:
            return await detail(operator_id, 400, error=exc.message)
        return await change(
            found,
            operator_id,
            lambda conn: operators.set_pools(conn, operator_id, pool_ids, actor=actor),
        )

    @bp.post(f"{HOME}/<uuid:operator_id>/deactivate")
    @operator_required("owner")
    async def deactivate(found: SignedIn, operator_id: UUID) -> Response:
        await read_form()
        actor = found.operator.email
        response = await change(
            found,
            operator_id,
            lambda conn: operators.set_status(conn, operator_id, "disabled", actor=actor),
        )
        if operator_id == found.operator.id and response.status_code == 303:
            return redirect_to("/login")  # their own sessions, this one too, have ended
        return response

    @bp.post(f"{HOME}/<uuid:operator_id>/reactivate")
    @operator_required("owner")
    async def reactivate(found: SignedIn, operator_id: UUID) -> Response:
        await read_form()
        actor = found.operator.email
        return await change(
            found,
            operator_id,
            lambda conn: operators.set_status(conn, operator_id, "active", actor=actor),
        )

    @bp.post(f"{HOME}/<uuid:operator_id>/reset-password")
    @operator_required("owner")
    async def reset(found: SignedIn, operator_id: UUID) -> Response:
        once = form_once(found, await read_form())
        actor = found.operator.email
        if operator_id == found.operator.id:
            return await detail(
                operator_id, 400, error="Change your own password on your account page."
            )

        def reset_once(conn: Conn) -> str:
            once.claim(conn, "operator.reset_password", operator_id)
            return operators.reset_password(conn, operator_id, actor=actor)

        password = await db_with_password(reset_once)
        return await detail(operator_id, password=password)

    @bp.post(f"{HOME}/<uuid:operator_id>/delete")
    @operator_required("owner")
    async def delete(found: SignedIn, operator_id: UUID) -> Response:
        await read_form()
        actor = found.operator.email
        try:
            await db(lambda conn: operators.delete_operator(conn, operator_id, actor=actor))
        except StoreError as exc:
            if isinstance(exc, NotFoundError):
                raise
            return await detail(operator_id, refused_status(exc), error=exc.message)
        if operator_id == found.operator.id:
            return redirect_to("/login")
        return redirect_to(HOME)

    return bp
