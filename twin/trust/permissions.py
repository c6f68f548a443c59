"""Roles and permissions, declared once: who holds which permission, who may open which page."""

from __future__ import annotations

from dataclasses import dataclass, replace

from twin.cases import TRANSITIONS_BY_ACTION
from twin.errors import PermissionDeniedError, ValidationError
from twin.schema import ORG_ROLES, ROLES

#: Everyone who is not logged in (the public transparency page). The roles of users are
#: declared once, in :data:`twin.schema.ROLES`.
ANONYMOUS_ROLE = "public"
#: Roles of people the community serves, not of its staff: residents, and volunteers (who
#: may also be residents, linked by their user's resident record).
SERVED = ("resident", "volunteer")
STAFF = tuple(r for r in ROLES if r not in SERVED)
#: Staff of the community itself (organisations' staff see only their organisation's work).
COMMUNITY_STAFF = tuple(r for r in STAFF if r not in ORG_ROLES)
EVERYONE = (*ROLES, ANONYMOUS_ROLE)

#: permission → the roles that hold it. Pages are ``page.<name>``; the UI and the library ask
#: :func:`can` / :func:`require`; docs/trust.md is written from this table.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "page.public": EVERYONE,
    # the big-screen cockpit map; grid workers have their own phone page with their grids' map
    "page.cockpit": tuple(r for r in COMMUNITY_STAFF if r != "grid_worker"),
    # the big screen of the command centre (/wall): officials on duty, and admins setting it up
    "page.wall": ("admin", "official"),
    "page.my_grid": ("grid_worker",),
    "page.cases": ("admin", "official", "dispatcher", "grid_worker", *ORG_ROLES),
    "page.kpi": ("admin", "official", "dispatcher", "planner"),
    "page.queries": ("admin", "official", "planner", "data_staff"),
    "page.layers": ("admin", "data_staff"),
    "page.participation": tuple(r for r in ROLES if r not in (*ORG_ROLES, "volunteer")),
    "page.my_reports": ("resident",),
    "page.audit": ("admin",),
    "page.users": ("admin",),
    "users.manage": ("admin",),
    "audit.read": ("admin",),
    # planner answers and layer files; a command without a named user is the public and gets
    # no personal data (twin.trust.privacy.protect)
    "queries.run": ("admin", "official", "planner", "data_staff", ANONYMOUS_ROLE),
    "layers.load": ("admin", "data_staff"),
    "layers.rollback": ("admin", "data_staff"),
    "participation.publish": ("admin", "official", "grid_worker"),
    "participation.answer": ("resident",),
    "participation.results": COMMUNITY_STAFF,
    "cases.report": TRANSITIONS_BY_ACTION["collect"].roles,
    "data.export_own": ("resident",),
    "retention.run": ("admin",),
    # alarms on the cockpit and the big screen (/wall): twin.trust.alarms
    "alarms.read": COMMUNITY_STAFF,
    # the live events (sensor readings, camera and resident reports) as features (twin.features)
    "events.read": COMMUNITY_STAFF,
    "alarms.acknowledge": ("admin", "official", "dispatcher", "grid_worker"),
    "alarms.dismiss": ("admin", "official", "dispatcher"),
    "alarms.promote": ("admin", "official", "dispatcher"),
    # SensorThings: exact sensor places, the building a sensor belongs to, and readings that
    # tell when someone is home (door magnets, water meters); others get the public view
    "sensors.private": COMMUNITY_STAFF,
    # a resident's own problem reports: report with a photo, follow them (twin.trust.my_reports)
    "reports.follow": ("resident",),
    # notification channels and the outbox (twin.trust.outgoing; docs/notify.md)
    "notify.manage": ("admin",),
    # organisations (twin.trust.organisations): the layer edited by admins in the browser; each
    # organisation's indicators for the cockpit (every one) and its own staff (their own)
    "organisations.edit": ("admin",),
    "organisations.indicators": ("admin", "official", "dispatcher", "planner", *ORG_ROLES),
    # volunteers, points and deliberation (twin.trust.volunteers, twin.trust.proposals)
    "page.volunteer": ("volunteer",),
    "page.proposals": ("resident", "admin", "official"),
    "page.volunteer_admin": ("admin", "official", "grid_worker"),
    "volunteers.post": ("admin", "official", "grid_worker"),  # grid workers: their own grids
    "volunteers.sign_up": ("volunteer",),
    "volunteers.roster": ("admin", "official", "grid_worker"),
    "proposals.propose": ("resident",),
    "proposals.support": ("resident",),
    "proposals.decide": ("admin", "official"),
    "proposals.read": (*ROLES, ANONYMOUS_ROLE),  # proposers masked; the public: adopted only
    "points.own": SERVED,
    "points.all": ("admin", "official"),
    "points.verify": ("admin",),
    "service.indicators": (*STAFF, ANONYMOUS_ROLE),  # hours per grid, adopted proposals
}

#: How each role sees personal data (columns flagged ``personal=True``):
#: ``grids`` full values, only of residents of buildings in the user's grids;
#: ``self`` full values of the user's own record only; ``masked`` every row, identifiers masked;
#: ``counts`` numbers per building only; ``none`` nothing.
PERSONAL_ACCESS: dict[str, str] = {
    "grid_worker": "grids",
    "resident": "self",
    "volunteer": "none",  # a volunteer's task says where and what, never whom (docs/volunteers.md)
    "admin": "masked",
    "data_staff": "masked",
    "official": "counts",
    "dispatcher": "counts",
    "planner": "counts",
    # residents of the buildings in their organisation's service areas, identifiers masked;
    # a case's reporter only on the cases their organisation holds
    "org_admin": "org",
    "org_staff": "org",
    ANONYMOUS_ROLE: "none",
}


@dataclass(frozen=True)
class User:
    """A logged-in person (or :data:`ANONYMOUS`): who, in which role, where they work or live.

    Made by :func:`twin.trust.authenticate` and :func:`twin.trust.session_user`; one made
    anywhere else carries no rights into the library, which resolves every user it is given
    against the store (:func:`twin.trust.users.resolve`).
    """

    username: str
    role: str
    display_name: str = ""
    grids: tuple[str, ...] = ()  # responsibility grids (or unit grid codes) of a grid worker
    resident_id: str | None = None  # a resident's own record in the residents layer
    building_code: str | None = None  # a resident's building (scope of notices and polls)
    disabled: bool = False
    org_id: str | None = None  # the organisation an org_admin / org_staff works for

    def __post_init__(self) -> None:
        if self.role not in EVERYONE:
            raise ValidationError(f"unknown role {self.role!r}; roles are {', '.join(ROLES)}")

    @property
    def name(self) -> str:
        return self.display_name or self.username

    @property
    def is_anonymous(self) -> bool:
        return self.role == ANONYMOUS_ROLE


ANONYMOUS = User("anonymous", ANONYMOUS_ROLE)


def can(user: User | None, permission: str) -> bool:
    """Return True if *user* (None: not logged in) holds *permission*.

    Raises
    ------
    ValidationError
        If the permission is not declared in :data:`PERMISSIONS`.
    """
    if permission not in PERMISSIONS:
        raise ValidationError(
            f"unknown permission {permission!r}; declared: {', '.join(sorted(PERMISSIONS))}"
        )
    user = user or ANONYMOUS
    return not user.disabled and user.role in PERMISSIONS[permission]


def require(user: User | None, permission: str) -> User:
    """Return *user* if they hold *permission*, else raise PermissionDeniedError saying who may."""
    if not can(user, permission):
        role = (user or ANONYMOUS).role
        raise PermissionDeniedError(
            f"role {role!r} may not {permission}; only {', '.join(PERMISSIONS[permission])} may. "
            "Log in as one of them or ask an administrator."
        )
    return user  # type: ignore[return-value]


def pages_for(user: User | None) -> list[str]:
    """Return the page names (``page.<name>``) *user* may open, in declaration order."""
    return [p.split(".", 1)[1] for p in PERMISSIONS if p.startswith("page.") and can(user, p)]



def with_role(user: User, role: str) -> User:
    """Return a copy of *user* in another role (for tests and previews; nothing is stored).

    Only :func:`can`, :func:`require` and :func:`pages_for` see the copy's role: the library's
    readers and steps take the role from the store (:func:`twin.trust.users.resolve`).
    """
    return replace(user, role=role)

