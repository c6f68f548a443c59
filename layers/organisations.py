"""组织 Organisations that govern with the community (共建共治): their service areas and duties.

One row per service area: an organisation with several areas (two estates, a MultiPolygon the
loader splits) has several rows with the same ``org_id``; the organisation's own columns are
taken from its first row. ``services`` lists the case categories it owns inside its areas and
its own handling limit for each (its SLA), written ``CODE=AMOUNT UNIT`` separated by ``;``
(``E0101=4 working_hours; P0107=2 working_days``); ``CODE`` alone takes the category's own
handling limit. Parsed and checked by :func:`twin.organisations.parse_services`.
"""

from twin.schema import Column, LayerSpec, MapStyle

#: The kinds of organisation of 共建共治共享 (DOMAIN.md, Participation).
ORG_TYPES = ("party_committee", "residents_committee", "property_company", "owners_committee",
             "co_building_unit", "social_organisation")



def _check(frame) -> None:
    """Refuse organisations whose services or hours cannot be read (twin.organisations.check)."""
    from twin.cases import load_categories
    from twin.organisations import check

    check(frame, set(load_categories().index))


SPEC = LayerSpec(
    name="organisations",
    title_zh="共建组织",
    title_en="Organisations",
    geometry_type="Polygon",
    id_field="area_id",
    located=False,
    columns=(
        Column("area_id", "text", "服务区编号", "Service area id", required=True,
               aliases=("id", "编号")),
        Column("org_id", "text", "组织编号", "Organisation id", required=True,
               aliases=("org", "组织编号")),
        Column("name", "text", "组织名称", "Name", required=True, aliases=("组织名称", "名称")),
        Column("org_type", "text", "组织类型", "Type", required=True, choices=ORG_TYPES,
               aliases=("type", "类型"),
               values=(("党委", "party_committee"), ("社区党委", "party_committee"),
                       ("居委会", "residents_committee"), ("社区居委会", "residents_committee"),
                       ("物业", "property_company"), ("物业公司", "property_company"),
                       ("业委会", "owners_committee"), ("业主委员会", "owners_committee"),
                       ("共建单位", "co_building_unit"), ("社会组织", "social_organisation"))),
        Column("services", "text", "负责类别及时限", "Categories owned and time limits",
               doc="CODE=AMOUNT UNIT; … (see twin.organisations.parse_services)"),
        Column("working_hours", "text", "工作时间", "Working hours",
               doc="HH:MM-HH:MM, comma separated; empty: the community's hours"),
        Column("working_days", "text", "工作日", "Working days", choices=("workdays", "daily"),
               doc="workdays: the national calendar; daily: every day of the year"),
        Column("office_phone", "text", "服务电话", "Service line",
               doc="the organisation's public line (not a person's)"),
        Column("contact_name", "text", "联系人", "Contact person", personal=True),
        Column("contact_phone", "text", "联系人电话", "Contact phone", personal=True),
        Column("valid_from", "date", "生效日期", "Valid from"),
        Column("valid_to", "date", "失效日期", "Valid to"),
    ),
    style=MapStyle(fill=(255, 170, 0, 30), line=(230, 130, 0, 220), line_width_m=2,
                   z_order=12, visible=False),
    tooltip=("name", "org_type", "office_phone"),
    check=_check,
)
