"""The console's interface strings in English and Chinese, and the choice between them.

Field labels and the names of members, statuses, stages and pools are not here: they come
from the tenant's catalog, as the events carry them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from leadhook.domain.errors import LeadhookError, ValidationError

LANGS = ("en", "zh")

STRINGS: dict[str, tuple[str, str]] = {
    # (English, 中文)
    "console": ("leadhook console", "leadhook 控制台"),
    "skip": ("Skip to content", "跳到正文"),
    "nav.leads": ("Leads", "线索"),
    "nav.events": ("Events", "事件"),
    "nav.subscriptions": ("Subscriptions", "订阅"),
    "nav.deliveries": ("Deliveries", "投递"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "api_key": ("Tenant API key", "租户 API 密钥"),
    "sign_in.help": (
        "Sign in with one of your tenant's API keys (lh_…). The console shows this tenant only.",
        "使用租户的 API 密钥（lh_…）登录。控制台只显示该租户的数据。",
    ),
    "sign_in.bad": ("Unknown or revoked API key.", "API 密钥无效或已吊销。"),
    "signed_in_as": ("Tenant", "租户"),
    "language": ("Language", "语言"),
    "search": ("Search", "搜索"),
    "search.leads": ("Name, mobile, id or any value", "姓名、手机号、ID 或任意值"),
    "filter": ("Filter", "筛选"),
    "clear": ("Clear", "清除"),
    "next": ("Next page", "下一页"),
    "prev": ("Previous page", "上一页"),
    "first_page": ("First page", "第一页"),
    "none": ("Nothing here yet.", "暂无数据。"),
    "none.filtered": ("Nothing matches these filters.", "没有符合这些筛选条件的内容。"),
    "none.search": ("No lead matches this search.", "没有符合此搜索的线索。"),
    "none.past_end": (
        "Nothing more: this page is past the end of the list.",
        "没有更多数据：此页已超出列表末尾。",
    ),
    "pages": ("Pages", "分页"),
    "page_number": ("Page", "页码"),
    "older_events": ("Older events: in the event log", "更早的事件：见事件日志"),
    "name": ("Name", "姓名"),
    "mobile": ("Mobile", "手机号"),
    "owner": ("Owner", "负责人"),
    "status": ("Status", "状态"),
    "stage": ("Stage", "生命周期阶段"),
    "pool": ("Pool", "公海池"),
    "version": ("Version", "版本"),
    "voided": ("voided", "已作废"),
    "lead": ("Lead", "线索"),
    "fields": ("Fields", "字段"),
    "timeline": ("Timeline", "时间线"),
    "follow_up": ("Follow-up", "跟进记录"),
    "by": ("by", "操作人"),
    "from": ("from", "来源"),
    "system": ("system", "系统"),
    "operator.1": ("user", "用户"),
    "operator.2": ("member", "成员"),
    "notes": ("Notes", "备注"),
    "changed": ("Changed", "变更"),
    "before": ("before", "之前"),
    "after": ("after", "之后"),
    "team_members": ("Team members", "团队成员"),
    "relations": ("Related objects", "关联对象"),
    "events_of_lead": ("Events of this lead", "该线索的事件"),
    "deliveries_of_lead": ("Deliveries of this lead", "该线索的投递"),
    "event_type": ("Event type", "事件类型"),
    "all": ("All", "全部"),
    "lead_id": ("Lead id", "线索 ID"),
    "time": ("Time", "时间"),
    "event": ("Event", "事件"),
    "json": ("JSON", "JSON"),
    "live": ("Live", "实时"),
    "live.help": (
        "New events of this tenant appear here as they commit.",
        "该租户的新事件提交后会实时出现在这里。",
    ),
    "live.waiting": ("Waiting for events…", "等待新事件…"),
    "live.needs_js": (
        "The live view needs JavaScript: reload the page to see new events in the log below.",
        "实时视图需要 JavaScript：请刷新页面，在下方日志中查看新事件。",
    ),
    "live.connected": ("connected", "已连接"),
    "live.disconnected": ("reconnecting…", "重新连接中…"),
    "log": ("Event log", "事件日志"),
    "url": ("Endpoint URL", "接收地址"),
    "description": ("Description", "描述"),
    "event_types": ("Event types", "事件类型"),
    "all_types": ("All event types (*)", "全部事件类型（*）"),
    "enabled": ("enabled", "已启用"),
    "disabled": ("disabled", "已停用"),
    "enable": ("Enable", "启用"),
    "disable": ("Disable", "停用"),
    "create": ("Create", "创建"),
    "create_subscription": ("New subscription", "新建订阅"),
    "save": ("Save", "保存"),
    "edit": ("Edit", "编辑"),
    "health": ("Last hour", "近一小时"),
    "success_rate": ("Success", "成功率"),
    "last_error": ("Last error", "最近错误"),
    "p50": ("p50", "p50"),
    "p99": ("p99", "p99"),
    "per_second": ("Deliveries/s", "投递/秒"),
    "attempts": ("Attempts", "尝试"),
    "attempts.all": ("Every attempt, retries and replays included", "全部尝试（含重试与重放）"),
    "max_in_flight": ("Max in flight", "最大并发"),
    "rate_limit": ("Rate limit (per s)", "速率限制（每秒）"),
    "rotate": ("Rotate secret", "轮换密钥"),
    "reveal": ("Reveal secret", "显示密钥"),
    "colon": (": ", "："),  # before a figure a message ends with
    "sign_in.already": (
        "This browser is signed in already (another key signs it in as that key's tenant"
        " instead), as",
        "此浏览器已登录（使用其他密钥登录将切换为该密钥的租户），当前租户：",
    ),
    "sign_in.go_on": ("Go on without signing in again", "不重新登录，继续"),
    "secret.previous": (
        "The previous secret also signs every delivery until",
        "之前的密钥在以下时间之前也会为每次投递签名：",
    ),
    "rotate.open": ("Rotate secret…", "轮换密钥…"),
    "rotate.help": (
        "Issues a new signing secret. The current one keeps signing beside it for 24 hours:"
        " switch your receivers to the new one within that time.",
        "签发新的签名密钥。当前密钥在 24 小时内仍会同时签名：请在此期间将接收方切换到新密钥。",
    ),
    "rotate.again": (
        "A rotation is under way: rotating again now ends the previous secret at once.",
        "轮换正在进行中：现在再次轮换会立即停用之前的密钥。",
    ),
    "missing": ("Events it never got", "未投递过的事件"),
    "missing.help": (
        "Queue the tenant's events since a time that this subscription has no delivery of:"
        " those of a period it was disabled, or from before it was created. 10,000 at most"
        " at a time, oldest first, in order per lead.",
        "将某时间之后、此订阅从未投递过的事件加入队列：包括订阅停用期间的事件，或订阅创建之前的事件。"
        "每次最多 10,000 条，从最早的开始，按线索顺序投递。",
    ),
    "missing.send": ("Send missing events", "发送缺失的事件"),
    "missing.done": ("Missing events queued", "已加入队列的缺失事件"),
    "missing.more": (
        "More are missing: send again for the next ones.",
        "还有更多缺失事件：再次发送以加入后续事件。",
    ),
    "secret.revealed": (
        "The current signing secret: keep it out of chats, tickets and logs.",
        "当前的签名密钥：请勿贴到聊天、工单或日志中。",
    ),
    "delete": ("Delete subscription…", "删除订阅…"),
    "delete.help": (
        "Nothing more is sent to this endpoint: its deliveries that have not succeeded yet end"
        " as dead (they stay in the deliveries list, filtered by this subscription), and the"
        " subscription leaves the subscriptions list. This cannot be undone.",
        "之后不再向此端点发送：尚未成功的投递全部标记为失败终止（仍可在投递列表中按此订阅筛选查看），"
        "订阅从订阅列表中移除。此操作无法撤销。",
    ),
    "delete.confirm": ("Delete it for good", "确认永久删除"),
    "sub.deleted.done": (
        "The subscription was deleted; its unfinished deliveries ended as dead.",
        "订阅已删除，其未完成的投递已标记为失败终止。",
    ),
    "sub.deleted.deliveries": ("See its deliveries", "查看它的投递"),
    "secret.once": (
        "The signing secret, shown this once: copy it now.",
        "签名密钥只显示这一次，请立即复制。",
    ),
    "secret.gone": (
        "The secret was shown once and is not shown on reload. \u201cReveal secret\u201d below, or"
        " GET /v1/subscriptions/{id}/secret with the tenant's API key, shows it again.",
        "密钥只显示一次，刷新页面不会再显示。可点击下方“显示密钥”，或用租户 API 密钥调用"
        " GET /v1/subscriptions/{id}/secret 再次查看。",
    ),
    "secret.rotated": (
        "The previous secret keeps signing beside this one for 24 hours.",
        "旧密钥在 24 小时内仍会同时签名。",
    ),
    "actions": ("Actions", "操作"),
    "test": ("Send a test event", "发送测试事件"),
    "test.result": ("Test answer", "测试结果"),
    "test.gone": (
        "This subscription was deleted meanwhile: no test event was sent.",
        "此订阅已被删除，未发送测试事件。",
    ),
    "test.ok": ("The endpoint acknowledged the test event.", "接收端已确认测试事件。"),
    "test.failed": ("The endpoint did not acknowledge.", "接收端未确认。"),
    "replay": ("Replay", "重放"),
    "replay.help": (
        "Queue again this subscription's finished deliveries created since a time, or send"
        " now the failed ones waiting for a retry.",
        "将该订阅自某时间以来已结束的投递重新排队，或立即发送等待重试的失败投递。",
    ),
    "replay.done": ("Deliveries queued again", "已重新排队的投递"),
    "since": ("Since", "起始时间"),
    "until": ("Until", "截止时间"),
    "dead_and_delivered": ("dead and delivered", "失败终止和已送达"),
    "chart": ("Deliveries/s and failure rate, last hour", "近一小时投递/秒与失败率"),
    "chart.rate": ("deliveries/s", "投递/秒"),
    "chart.failures": ("failure %", "失败率 %"),
    "subscription": ("Subscription", "订阅"),
    "delivery": ("Delivery", "投递"),
    "retry": ("Retry now", "立即重试"),
    "retry.orphaned": (
        "Its subscription was deleted: this delivery cannot be sent again.",
        "其订阅已删除：此投递无法再次发送。",
    ),
    "sub.deleted": ("deleted", "已删除"),
    "sub.unknown": ("no such subscription", "无此订阅"),
    "retried": ("Queued again: it will be sent in a moment.", "已重新排队，稍后发送。"),
    "retried.waiting": (
        "Queued again: it will be sent once its subscription is enabled again.",
        "已重新排队：订阅重新启用后发送。",
    ),
    "replay.waiting": (
        "The subscription is disabled: they will be sent once it is enabled again.",
        "该订阅已停用：重新启用后才会发送。",
    ),
    "sub.disabled_note": (
        "Its subscription is disabled: this delivery waits until it is enabled again.",
        "其订阅已停用：此投递将等到订阅重新启用后再发送。",
    ),
    "saved": ("Saved.", "已保存。"),
    "sub.created": ("Subscription created.", "订阅已创建。"),
    "request": ("Request", "请求"),
    "request_headers": ("Request headers", "请求头"),
    "request_body": ("Request body", "请求体"),
    "signature_note": (
        "The signature is not stored: each attempt is signed with the secrets active then.",
        "签名不会保存：每次尝试都用当时有效的密钥签名。",
    ),
    "response": ("Response", "响应"),
    "response_body": ("First KB of the response", "响应的前 1 KB"),
    "latency": ("Latency", "延迟"),
    "error": ("Error", "错误"),
    "next_attempt": ("Next attempt", "下次尝试"),
    "created": ("Created", "创建时间"),
    "attempt": ("Attempt", "尝试"),
    "no_attempts": ("Not attempted yet.", "尚未尝试。"),
    "page_position": ("Page", "分页位置"),
    "not_stored": ("(not stored)", "（未保存）"),
    "request_failed": (
        "The request failed: reload the page and try again",
        "请求失败：请刷新页面后重试",
    ),
    "not_sent": (
        "Not sent: the endpoint's circuit was open, so no request went out.",
        "未发送：该端点处于熔断状态，没有发出请求。",
    ),
    "not_found": ("Not found", "未找到"),
    "method_not_allowed": ("Not a page", "不是页面"),
    "forbidden": ("Refused", "已拒绝"),
    "bad_request": ("Bad request", "请求无效"),
    "too_many_requests": ("Too many requests", "请求过多"),
    "back": ("Back", "返回"),
    "view": ("Open", "查看"),
    "deliveries_of_sub": ("Its deliveries", "它的投递"),
    "id": ("Id", "ID"),
    "status.pending": ("pending", "待发送"),
    "status.delivered": ("delivered", "已送达"),
    "status.failed": ("failed", "失败待重试"),
    "status.dead": ("dead", "失败终止"),
    "type.object_create": ("Lead created", "新建线索"),
    "type.object_update": ("Fields updated", "更新字段"),
    "type.object_update_status": ("Status changed", "线索状态变更"),
    "type.object_voids": ("Voided", "作废"),
    "type.object_change_owner": ("Owner changed", "负责人变更"),
    "type.object_update_life_cycle": ("Stage changed", "生命周期阶段变更"),
    "type.object_add_notes": ("Note added", "添加备注"),
    "type.object_add_team_member": ("Team members added", "添加团队成员"),
    "type.object_remove_team_member": ("Team member removed", "移除团队成员"),
    "type.object_change_lead_pool": ("Pool changed", "公海池变更"),
    "type.object_restore": ("Restored", "恢复"),
    "type.object_relation": ("Object related", "关联对象"),
    "type.object_source_info": ("Source changed", "来源信息变更"),
    "detail.members": ("Members", "成员"),
    "detail.relation": ("Related to", "关联到"),
    "detail.scene_type": ("Scene", "场景"),
    # An owner change's scene (docs/contract.md, section 5), shown with its number.
    "scene.1": ("automatic allocation", "自动分配"),
    "scene.2": ("manual allocation", "手动分配"),
    "scene.3": ("claimed from a pool", "从公海领取"),
    "scene.4": ("returned to a pool", "退回公海"),
    "scene.5": ("reclaimed by a pool rule", "规则回收"),
    "scene.6": ("duplicate merge", "查重合并"),
}


def pick(accept_language: str | None, cookie: str | None) -> str:
    """Choose the language: the switch's cookie, else the browser's first known language."""
    if cookie in LANGS:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        primary = tag.split("-")[0]
        if primary in LANGS:
            return primary
    return "en"


def translator(lang: str) -> Callable[[str], str]:
    """Return `t(key)`: the string in `lang`, the key itself when it has none."""
    index = LANGS.index(lang) if lang in LANGS else 0

    def t(key: str) -> str:
        pair = STRINGS.get(key)
        return key if pair is None else pair[index]

    return t


# A problem's field, as the form that sent it labels it (the services name it as the API does:
# `body.url`, `query.event_type`).
FIELD_LABELS = {
    "url": "url",
    "description": "description",
    "event_types": "event_types",
    "max_in_flight": "max_in_flight",
    "rate_limit_per_s": "rate_limit",
    "since": "since",
    "until": "until",
    "status": "status",
    "event_type": "event_type",
    "lead": "lead_id",
    "p": "page_number",
    "before": "page_position",
}

# Why an address is refused (domain/targets.py), in Chinese.
_ADDRESS_KINDS_ZH = {
    "an unspecified address": "未指定地址",
    "a loopback address": "回环地址",
    "a cloud metadata address": "云元数据地址",
    "a link-local address": "链路本地地址",
    "a site-local address": "站点本地地址",
    "a carrier-grade NAT address": "运营商级 NAT 地址",
    "a multicast address": "组播地址",
    "a reserved address": "保留地址",
    "a private address": "私有地址",
    "not a public address": "非公网地址",
    "a local-use NAT64 address": "本地用途的 NAT64 地址",
}
_ALLOW_ZH = "如需允许，请设置 LEADHOOK_ALLOW_PRIVATE_TARGETS=1"

# The services' messages that the console's forms and pages meet, in Chinese: (pattern, what
# it reads in Chinese, with the pattern's groups). Whatever is not here stays in English, the
# services' own words, so that nothing is ever hidden.
_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern + r"\Z", re.DOTALL), zh)
    for pattern, zh in (
        (
            r"must be an absolute http:// or https:// URL",
            "必须是以 http:// 或 https:// 开头的完整地址",
        ),
        (r"must be 1-(\d+) characters", r"长度须为 1 到 \1 个字符"),
        (r"must not contain whitespace or control characters", "不能包含空白或控制字符"),
        (r"is not a valid URL \((.*)\)", r"不是有效的地址（\1）"),
        (
            r"must not carry credentials \(user:password@\)",
            "不能包含用户名和密码（user:password@）",
        ),
        (r"must name a host", "必须写明主机"),
        (r"must not use port 0", "不能使用端口 0"),
        (
            r"(.+) names this machine; set LEADHOOK_ALLOW_PRIVATE_TARGETS=1 to allow it",
            r"\1 指向本机；" + _ALLOW_ZH,
        ),
        (r"must be a string", "必须是文本"),
        (
            r"this form has no valid CSRF token: reload the page and try again",
            "此表单没有有效的 CSRF 令牌：请刷新页面后重试",
        ),
        (
            r"(/console/\S*) is an action, not a page: use its button in the console",
            r"\1 是一个操作，不是页面：请使用控制台中的按钮",
        ),
        (
            r"(/console/\S*) is a page: open it, nothing is posted to it",
            r"\1 是页面：请直接打开，不能向它提交",
        ),
        (r"disabled via the console", "已在控制台停用"),
        (r"disabled via the API", "已通过 API 停用"),
        (
            r"this tenant has (\d+) subscriptions, the most it may have"
            r" \(LEADHOOK_MAX_SUBSCRIPTIONS=(\d+)\): delete one first, or send more event types"
            r" to one endpoint \(event_types\)",
            r"该租户已有 \1 个订阅，已达上限（LEADHOOK_MAX_SUBSCRIPTIONS=\2）："
            r"请先删除一个，或让一个端点接收更多事件类型",
        ),
        (
            r"this tenant has (\d+) subscriptions, more than it may have"
            r" \(LEADHOOK_MAX_SUBSCRIPTIONS=(\d+)\): delete one first, or send more event types"
            r" to one endpoint \(event_types\)",
            r"该租户已有 \1 个订阅，超过上限（LEADHOOK_MAX_SUBSCRIPTIONS=\2）："
            r"请先删除一个，或让一个端点接收更多事件类型",
        ),
        (
            r"this API key is limited to (\S+) requests a second \(bursts of (\S+)\);"
            r" retry after the time Retry-After gives",
            r"此 API 密钥每秒最多 \1 个请求（突发 \2 个）；请稍候再试",
        ),
        # Pydantic's own words, for a query parameter such as a page number (`?p=0`).
        (r"Input should be greater than or equal to (-?\d+)", r"应大于或等于 \1"),
        (r"Input should be less than or equal to (-?\d+)", r"应小于或等于 \1"),
        (r"Input should be a valid integer.*", "应为整数"),
        (
            r"must be a non-empty list of event types, or \[\"\*\"\]",
            "至少选择一种事件类型，或选择全部",
        ),
        (r"\"\*\" must be the only item", "选择全部时不能再选其他类型"),
        (r"unknown event type (.*)", r"未知的事件类型 \1"),
        (r"must be a string of at most (\d+) characters", r"必须是不超过 \1 个字符的文本"),
        (r"must be an integer from 1 to (\d+)", r"必须是 1 到 \1 之间的整数"),
        (
            r"must be null or a number above 0 and at most (\S+)",
            r"留空（不限速），或填写大于 0 且不超过 \1 的数",
        ),
        (r"is required", "必填"),
        (r"choose the time from which to replay", "请选择从哪个时间开始重放"),
        (r"must be later than since", "必须晚于起始时间"),
        (r"(.+) is not a time \(YYYY-MM-DDTHH:MM\)", r"\1 不是时间（YYYY-MM-DDTHH:MM）"),
        (r"(.+) is not a time between 1970 and 9999", r"\1 不是 1970 到 9999 年之间的时间"),
        (
            r"is before 1970-01-01T00:00:00Z, unix time 0",
            "早于 1970-01-01T00:00:00Z（unix 时间 0）",
        ),
        (r"must be one of (.+)", r"必须是以下之一：\1"),
        (
            r"must be dead, delivered, failed, or omitted \(dead and delivered\)",
            "必须是 dead、delivered 或 failed，或留空（dead 和 delivered）",
        ),
        (r"must be a position from a previous page", "必须是上一页给出的位置"),
        (r"the subscription of this delivery was deleted", "该投递的订阅已被删除"),
        (
            r"this delivery is already pending \(queued or being sent\)",
            "该投递已在等待发送（已排队或正在发送）",
        ),
        (
            r"this delivery is being sent right now; retry it afterwards",
            "该投递正在发送，请稍后再重试",
        ),
        (r"subscription (.+) not found", r"未找到订阅 \1"),
        (r"delivery (.+) not found", r"未找到投递 \1"),
        (r"lead (.+) not found", r"未找到线索 \1"),
        (r"the console has no page (.+)", r"控制台没有页面 \1"),
        (
            r"a field of this form holds a NUL character: remove it and try again",
            "表单的某个字段含有 NUL 字符：请删除后重试",
        ),
    )
)
# Bounded pieces only: two lazy `.+?` groups here took seconds of backtracking (the GIL held,
# every tenant's requests waiting) on a 40 KB text a time box echoed (a security review).
_REFUSED_ADDRESS = re.compile(
    r"(\S+) is (an? [a-z0-9 -]{1,40} address|not a public address)"
    r"( \(embedded in \S+\))?; (set LEADHOOK_\S+ to allow it)\Z"
)
# Longer service messages are left in English: each pattern below reads a message in time
# linear at worst in its length, and none the console translates is near this long.
_LONGEST_TRANSLATED = 600
# A name refused for what it resolves to (adapters/http/sender.py, `check_name_now`).
_RESOLVED_TO = re.compile(r"(\S+) resolves to (.+?); set LEADHOOK_.*\Z")


def message(text: str, lang: str) -> str:
    """A service's message in `lang`: Chinese where the console knows it, else as it is."""
    if lang != "zh" or len(text) > _LONGEST_TRANSLATED:
        return text
    resolved = _RESOLVED_TO.match(text)
    if resolved is not None and resolved.group(2) in _ADDRESS_KINDS_ZH:
        return f"{resolved.group(1)} 解析到{_ADDRESS_KINDS_ZH[resolved.group(2)]}；{_ALLOW_ZH}"
    refused = _REFUSED_ADDRESS.match(text)
    if refused is not None and refused.group(2) in _ADDRESS_KINDS_ZH:
        embedded = refused.group(3) or ""
        return f"{refused.group(1)}{embedded} 是{_ADDRESS_KINDS_ZH[refused.group(2)]}；{_ALLOW_ZH}"
    for pattern, zh in _ZH:
        found = pattern.match(text)
        if found is not None:
            return found.expand(zh)
    return text


def field_of(loc: Sequence[Any]) -> Sequence[Any]:
    """A problem's location without its part of the request (body, query, path, header)."""
    return loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path", "header") else loc


def field_label(loc: tuple[str | int, ...], t: Callable[[str], str]) -> str:
    """A problem's location as the console's form labels it: `body.url` is "Endpoint URL"."""
    parts = field_of(loc)
    if len(parts) >= 1 and parts[0] in FIELD_LABELS:
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[1:])
        return t(FIELD_LABELS[str(parts[0])]) + rest
    return ".".join(str(p) for p in parts)


def explain(exc: LeadhookError, lang: str) -> str:
    """An error as a console page shows it: the field by its label, the message in `lang`."""
    if isinstance(exc, ValidationError) and len(exc.errors) == 1:
        (problem,) = exc.errors
        colon = "：" if lang == "zh" else ": "
        return field_label(problem.loc, translator(lang)) + colon + message(problem.msg, lang)
    return message(exc.detail, lang)
