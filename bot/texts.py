"""What the bot says, in English and Simplified Chinese."""

from __future__ import annotations

from config.sites import normalise_locale

LANGUAGES = {"en": "English", "zh": "简体中文"}

_TEXTS: dict[str, dict[str, str]] = {
    "welcome": {
        "en": "Hello! This bot confirms sign-ups and sends you news from the sites you use.\n\n"
        "You are subscribed to announcements; /stop unsubscribes. /help lists the commands.",
        "zh": "您好！本机器人用于确认注册，并向您发送所用网站的通知。\n\n"
        "您已订阅通知；发送 /stop 可退订。发送 /help 查看全部命令。",
    },
    "help": {
        "en": "/start - subscribe to announcements again\n"
        "/stop - unsubscribe\n"
        "/language - choose English or Chinese\n"
        "/remind <when> <text> - e.g. /remind 10m tea, /remind tomorrow 9:00 call Anna\n"
        "/reminders - your reminders; /cancel <id> - cancel one\n"
        "/timezone <zone> - your time zone for reminders\n"
        "/help - this list\n\n"
        "To confirm a sign-up, open the Telegram link the site gave you.",
        "zh": "/start - 重新订阅通知\n"
        "/stop - 退订\n"
        "/language - 选择中文或英文\n"
        "/remind <时间> <内容> - 例如 /remind 10分钟 喝茶、/remind 明天 9:00 给安娜打电话\n"
        "/reminders - 查看提醒；/cancel <编号> - 取消提醒\n"
        "/timezone <时区> - 设置提醒使用的时区\n"
        "/help - 查看本列表\n\n"
        "如需确认注册，请打开网站提供的 Telegram 链接。",
    },
    "confirm": {
        "en": "Confirm your sign-up at {site}?",
        "zh": "确认您在{site}的注册吗？",
    },
    "confirm_yes": {"en": "✅ Confirm", "zh": "✅ 确认"},
    "confirm_no": {"en": "Not me", "zh": "不是我"},
    "share_phone": {
        "en": "To confirm your sign-up at {site}, share your phone number with the button below.",
        "zh": "如需确认您在{site}的注册，请点击下方按钮分享您的手机号码。",
    },
    "share_phone_button": {"en": "📱 Share my phone number", "zh": "📱 分享我的手机号码"},
    "approved": {
        "en": "✅ Confirmed. You can go back to {site}.",
        "zh": "✅ 已确认，您可以返回{site}。",
    },
    "declined": {
        "en": "Understood: this sign-up was canceled. Nothing is linked to your account.",
        "zh": "已取消此次注册，您的账号未被关联。",
    },
    "already": {
        "en": "This sign-up is already confirmed.",
        "zh": "此次注册已经确认过了。",
    },
    "expired": {
        "en": "This link has expired. Ask the site for a new one.",
        "zh": "此链接已过期，请在网站上重新获取。",
    },
    "closed": {
        "en": "This sign-up is no longer open. Ask the site for a new link if you still need one.",
        "zh": "此次注册已结束。如仍需确认，请在网站上重新获取链接。",
    },
    "invalid": {
        "en": "This link is not valid. Please use the link the site gave you.",
        "zh": "此链接无效，请使用网站提供的链接。",
    },
    "other_user": {
        "en": "This link was already opened by another Telegram account.",
        "zh": "此链接已被另一个 Telegram 账号打开。",
    },
    "phone_mismatch": {
        "en": "That phone number does not match the one you signed up with.",
        "zh": "该手机号码与注册时填写的号码不一致。",
    },
    "not_own_contact": {
        "en": "Please share your own phone number with the button, not someone else's contact.",
        "zh": "请使用按钮分享您本人的手机号码，而不是他人的联系人。",
    },
    "no_pending": {
        "en": "There is nothing to confirm right now. Open the link the site gave you first.",
        "zh": "当前没有需要确认的内容，请先打开网站提供的链接。",
    },
    "stopped": {
        "en": "You are unsubscribed and will not receive announcements. /start subscribes again.",
        "zh": "您已退订，将不再收到通知。发送 /start 可重新订阅。",
    },
    "choose_language": {"en": "Choose your language:", "zh": "请选择语言："},
    "language_set": {"en": "Language: English.", "zh": "语言已设置为简体中文。"},
    "reminder_set": {
        "en": "⏰ Reminder {id} set for {when}.",
        "zh": "⏰ 已设置提醒 {id}：{when}。",
    },
    "reminder_text_missing": {
        "en": "What should I remind you of? For example: /remind 10m take the cake out",
        "zh": "要提醒您什么呢？例如：/remind 10分钟 把蛋糕拿出来",
    },
    "too_many_reminders": {
        "en": "You have 50 reminders waiting already; /cancel some first.",
        "zh": "您已有 50 条待发提醒，请先用 /cancel 取消一些。",
    },
    "reminder_too_long": {
        "en": "That reminder is too long: it may be at most {limit:,} characters "
        "(yours has {length:,}). Please shorten it.",
        "zh": "提醒内容太长：最多 {limit} 个字符（您的有 {length} 个），请缩短后再试。",
    },
    # What a reminder looks like when it goes off; /remind keeps room for this prefix.
    "reminder_fired": {"en": "⏰ Reminder: {text}", "zh": "⏰ 提醒: {text}"},
    "no_reminders": {"en": "No reminders waiting.", "zh": "没有待发的提醒。"},
    "reminders": {"en": "Your reminders:", "zh": "您的提醒："},
    "reminders_page": {
        "en": "Your reminders ({first}-{last} of {total}):",
        "zh": "您的提醒（第 {first}-{last} 条，共 {total} 条）：",
    },
    "page_next": {"en": "More ▸", "zh": "更多 ▸"},
    "page_previous": {"en": "◂ Back", "zh": "◂ 上一页"},
    "broadcast_too_long": {
        "en": "This broadcast is too long for Telegram: it may be at most {limit:,} characters "
        "(it has {length:,}). Nothing was sent.",
        "zh": "此广播超出 Telegram 的长度限制：最多 {limit} 个字符（当前有 {length} 个）。"
        "未发送任何内容。",
    },
    "reminder_canceled": {"en": "Reminder {id} canceled.", "zh": "提醒 {id} 已取消。"},
    "reminder_not_found": {
        "en": "No reminder {id} is waiting. /reminders lists yours.",
        "zh": "没有待发的提醒 {id}。发送 /reminders 查看您的提醒。",
    },
    "cancel_usage": {
        "en": "Usage: /cancel <id> (see /reminders).",
        "zh": "用法：/cancel <编号>（见 /reminders）。",
    },
    "timezone_is": {
        "en": "Your time zone: {zone}. Change it with /timezone Europe/Berlin (or UTC+8).",
        "zh": "您的时区：{zone}。可用 /timezone Asia/Shanghai（或 UTC+8）修改。",
    },
    "timezone_set": {"en": "Time zone set: {zone}.", "zh": "时区已设置为：{zone}。"},
    "unknown": {
        "en": "I don't know that command. /help lists what I can do.",
        "zh": "无法识别该命令。发送 /help 查看可用命令。",
    },
}


def text(key: str, lang: str, **values: object) -> str:
    """The text ``key`` in ``lang`` (English when that language has none)."""
    variants = _TEXTS[key]
    template = variants.get(lang) or variants["en"]
    return template.format(**values) if values else template


def language_of(code: str | None, override: str | None = None) -> str:
    """The person's chosen language, else their Telegram app's, else English."""
    return override or normalise_locale(code)
