"""The console's interface strings in English and Chinese, and the choice between them.

Field labels and the names of members, statuses, stages and pools are not here: they come
from the tenant's catalog, as the events carry them.
"""

from __future__ import annotations

from collections.abc import Callable

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
    "none.past_end": (
        "Nothing more: this page is past the end of the list.",
        "没有更多数据：此页已超出列表末尾。",
    ),
    "pages": ("Pages", "分页"),
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
    "max_in_flight": ("Max in flight", "最大并发"),
    "rate_limit": ("Rate limit (per s)", "速率限制（每秒）"),
    "rotate": ("Rotate secret", "轮换密钥"),
    "secret.once": (
        "The signing secret, shown this once: copy it now.",
        "签名密钥只显示这一次，请立即复制。",
    ),
    "secret.gone": (
        "The secret was shown once, when it was issued. GET /v1/subscriptions/{id}/secret"
        " (with the tenant's API key) reads it again. Rotating once more would end the"
        " previous secret at once.",
        "密钥只在签发时显示一次。可用租户 API 密钥调用 GET /v1/subscriptions/{id}/secret"
        " 再次读取。再次轮换会立即停用之前的密钥。",
    ),
    "secret.rotated": (
        "The previous secret keeps signing beside this one for 24 hours.",
        "旧密钥在 24 小时内仍会同时签名。",
    ),
    "actions": ("Actions", "操作"),
    "test": ("Send a test event", "发送测试事件"),
    "test.result": ("Test answer", "测试结果"),
    "test.ok": ("The endpoint acknowledged the test event.", "接收端已确认测试事件。"),
    "test.failed": ("The endpoint did not acknowledge.", "接收端未确认。"),
    "replay": ("Replay", "重放"),
    "replay.help": (
        "Queue again this subscription's finished deliveries created since a time.",
        "将该订阅自某时间以来已结束的投递重新排队。",
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
    "retried": ("Queued again: it will be sent in a moment.", "已重新排队，稍后发送。"),
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
    "not_found": ("Not found", "未找到"),
    "method_not_allowed": ("Not a page", "不是页面"),
    "forbidden": ("Refused", "已拒绝"),
    "bad_request": ("Bad request", "请求无效"),
    "back": ("Back", "返回"),
    "view": ("Open", "查看"),
    "deliveries_of_sub": ("Its deliveries", "它的投递"),
    "id": ("Id", "ID"),
    "status.pending": ("pending", "待发送"),
    "status.delivered": ("delivered", "已送达"),
    "status.failed": ("failed", "失败待重试"),
    "status.dead": ("dead", "失败终止"),
    "type.object_create": ("Created", "新建线索"),
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
