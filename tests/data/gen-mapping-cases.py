#!/usr/bin/env python3
"""Generates tests/data/mapping-cases.json. Every expected digest is computed
here with hashlib from the normalisation rules of SPEC 5 (independent of
capid). Run from the repo root: python3 tests/data/gen-mapping-cases.py > tests/data/mapping-cases.json"""
import copy
import hashlib
import json
import re
import string
import sys

NOW = 1764000000            # 2025-11-24T16:00:00Z
TS = 1763996400             # one hour earlier
TS_MS = TS * 1000
URL = "https://shop.example/p?x=1"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
IP = "203.0.113.7"
EMAIL = "Jane.Doe@Example.com"
DAY = 86400

HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")


def sha(s):
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


# ---- SPEC 5 normalisation (only what these cases need) ----
EM_RE = re.compile(
    r"^[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+(?:\.[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
PUNCT = set(string.punctuation)


def passthrough(v):
    t = v.strip()
    return t.lower() if HEX64.match(t) else None


def n_em(v):
    t = v.strip().lower()
    return t if EM_RE.match(t) else None


def n_ph(v):
    d = "".join(c for c in v if c in string.digits).lstrip("0")
    return d or None


def n_name(v):
    r = "".join(c for c in v if c not in PUNCT and not c.isspace()).lower()
    return r or None


def n_ct(v):
    r = "".join(c for c in (n_name(v) or "") if c not in string.digits)
    return r or None


# exact names used by the cases (SPEC 5 st/country: iso-codes names + aliases)
STATES = {"california": "ca", "ontario": "on", "newyork": "ny"}
COUNTRIES = {"france": "fr", "usa": "us", "unitedstates": "us", "uk": "gb", "deu": "de",
             "germany": "de"}


def fold(v):
    import unicodedata
    s = unicodedata.normalize("NFKD", v.lower())
    return "".join(c for c in s if c in string.ascii_lowercase)


def n_st(v):
    f = fold(v)
    if not f:
        return None
    if len(f) == 2:
        return f
    return STATES.get(f, f)


ISO2 = {"fr", "us", "gb", "de", "ca"}


def n_country(v):
    f = fold(v)
    if len(f) == 2 and f in ISO2:
        return f
    return COUNTRIES.get(f)


def n_zp(v, country=None):
    t = v.lower().split("-", 1)[0]
    t = "".join(c for c in t if not c.isspace())
    if len(t) < 2:
        return None
    if country == "us" and len(t) == 9 and t.isdigit():
        t = t[:5]
    return t


MALE = "man male boy gentleman guy sir mister mr son father dad daddy papa uncle nephew brother husband boyfriend groom widower king prince duke count emperor god lord lad fellow chap bloke dude he him his himself m".split()
FEMALE = "woman female girl lady miss ms mrs madam ma'am daughter mother mom mama mommy aunt niece sister wife girlfriend bride widow queen princess duchess countess empress goddess maiden lass gal chick dame belle she her hers herself f".split()


def n_ge(v):
    t = v.strip().lower()
    return "m" if t in MALE else "f" if t in FEMALE else None


def n_db(v, now_year=2025):
    groups = re.sub(r"\D", " ", v).split()
    if len(groups) >= 3:
        n1, n2, n3 = (int(g) for g in groups[:3])
        if n1 > 31:
            y, m, d = n1, (n3 if n2 > 12 else n2), (n2 if n2 > 12 else n3)
        elif n2 > 31:
            y, m, d = n2, (n1 if n3 > 12 else n3), (n3 if n3 > 12 else n1)
        else:
            y, m, d = n3, (n2 if n1 > 12 else n1), (n1 if n1 > 12 else n2)
        if 1800 <= y <= now_year + 1 and 1 <= m <= 12 and 1 <= d <= 31:
            return f"{y:04d}{m:02d}{d:02d}"
        return None
    if len(groups) == 1 and len(groups[0]) == 8:
        return groups[0]
    return None


def n_xid(v):
    r = "".join(c for c in v.lower() if not c.isspace())
    return r or None


NORM = {"em": n_em, "ph": n_ph, "fn": n_name, "ln": n_name, "ct": n_ct, "st": n_st,
        "country": n_country, "ge": n_ge, "db": n_db, "external_id": n_xid}


def hv(key, *values, country=None):
    """Hashed array for a user_data key: normalise, hash, de-duplicate in order."""
    out = []
    for v in values:
        p = passthrough(v)
        if p is None:
            n = n_zp(v, country) if key == "zp" else NORM[key](v)
            if n is None:
                continue
            p = sha(n)
        if p not in out:
            out.append(p)
    assert out, (key, values)
    return out


EM = hv("em", EMAIL)
assert EM == ["86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"]


def canon_id(ev):
    """SPEC 4.1 deterministic id: hex SHA-256 of the canonical bytes (compact
    JSON, object keys sorted bytewise; see src/event/event.h)."""
    return sha(json.dumps(ev, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


# ---- builders ----
CASES = []


def ev(name="page_view", eid="ev-1", ts=TS_MS, user=None, url=URL, ua=UA, ip=IP, root=None,
       **extra):
    """A typical website event; pass None to leave a part out."""
    e = {"event_name": name}
    ctx = {}
    if eid is not None:
        ctx["event_id"] = eid
    if ts is not None:
        ctx["event_timestamp"] = ts
    if url is not None:
        ctx["page"] = {"url": url}
    dev = {}
    if ip is not None:
        dev["ip"] = ip
    if ua is not None:
        dev["user_agent"] = ua
    if dev:
        ctx["device"] = dev
    e["context"] = ctx
    e["user"] = {"email": EMAIL} if user is None else user
    for k, v in list((root or {}).items()) + list(extra.items()):
        e[k] = v
    return e


def out(name="PageView", eid="ev-1", t=TS, source="website", url=URL, ud=None, cd=None, **extra):
    o = {"event_name": name, "event_time": t, "event_id": eid, "action_source": source}
    if url is not None:
        o["event_source_url"] = url
    o.update(extra)
    if ud is None:
        ud = {"em": EM, "client_ip_address": IP, "client_user_agent": UA}
    o["user_data"] = ud
    if cd is not None:
        o["custom_data"] = cd
    return o


def UD(**kw):
    """Default user_data (em, ip, ua) updated with kw; a value None removes the key."""
    d = {"em": EM, "client_ip_address": IP, "client_user_agent": UA}
    for k, v in kw.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def case(name, inp, expect, settings=None, now=NOW):
    assert name not in {c["name"] for c in CASES}, name
    CASES.append({"name": name, "settings": settings or {}, "now": now, "input": inp,
                  "expect": expect})


def skip(reason):
    return {"skipped": reason}


# =========================== event names (4.2) ===========================
SEED = [("begin_checkout", "InitiateCheckout"), ("purchase", "Purchase"),
        ("add_to_cart", "AddToCart"), ("view_item", "ViewContent"),
        ("view_item_list", "ViewContent"), ("search", "Search"),
        ("add_payment_info", "AddPaymentInfo"), ("add_to_wishlist", "AddToWishlist"),
        ("generate_lead", "Lead"), ("page_view", "PageView"),
        ("sign_up", "CompleteRegistration"), ("contact", "Contact"),
        ("customize_product", "CustomizeProduct"), ("donate", "Donate"),
        ("find_location", "FindLocation"), ("schedule", "Schedule"),
        ("start_trial", "StartTrial"), ("submit_application", "SubmitApplication"),
        ("subscribe", "Subscribe")]
for src, dst in SEED:
    if src == "purchase":
        case(f"seed name {src} -> {dst}", ev(src, value=10, currency="EUR"),
             out(dst, cd={"value": 10, "currency": "EUR"}))
    else:
        case(f"seed name {src} -> {dst}", ev(src), out(dst))

case("event_names setting overrides the seed table (renamed purchase escapes the Purchase gate)",
     ev("purchase"), out("LegacyPurchase"), settings={"event_names": {"purchase": "LegacyPurchase"}})
case("event_names setting mapping to Purchase brings the Purchase gate",
     ev("order_done"), skip("purchase_without_value"),
     settings={"event_names": {"order_done": "Purchase"}})
case("integrations.facebook.event_name wins over event_names setting and seed table",
     ev("add_to_cart", integrations={"facebook": {"event_name": "CartPromo"}}),
     out("CartPromo"), settings={"event_names": {"add_to_cart": "CartAdd"}})
case("integrations.facebook.event_name Purchase on a page_view needs value and currency",
     ev("page_view", integrations={"facebook": {"event_name": "Purchase"}}),
     skip("purchase_without_value"))
case("unmapped event name is sent unchanged, case kept",
     ev("Newsletter_OptIn"), out("Newsletter_OptIn"))

# =========================== event_time (2, 4.1) ===========================
case("event_time: epoch ms integer is floored to seconds",
     ev(ts=TS_MS + 999), out())
case("event_time: epoch ms as numeric string",
     ev(ts=str(TS_MS + 500)), out())
case("event_time: integer below 1e11 is seconds",
     ev(ts=TS - 400), out(t=TS - 400))
case("event_time: seconds as numeric string",
     ev(ts=str(TS - 400)), out(t=TS - 400))
case("event_time: ISO-8601 with Z",
     ev(ts="2025-11-24T15:00:00Z"), out())
case("event_time: ISO-8601 with +05:30",
     ev(ts="2025-11-24T20:30:00+05:30"), out())
case("event_time: ISO-8601 with -hhmm offset",
     ev(ts="2025-11-24T10:00:00-0500"), out())
case("event_time: ISO-8601 fraction is floored",
     ev(ts="2025-11-24T15:00:00.987Z"), out())
case("event_time: absent means the receive time (now)",
     ev(ts=None), out(t=NOW))
case("event_time: unparsable string is invalid_event",
     ev(ts="yesterday"), skip("invalid_event"))
case("event_time: boolean timestamp is invalid_event",
     ev(ts=True), skip("invalid_event"))
case("event_time: ISO-8601 with month 13 is invalid_event",
     ev(ts="2025-13-24T15:00:00Z"), skip("invalid_event"))
case("event_time: 99999999999 (< 1e11) is seconds, far in the future",
     ev(ts=99999999999), skip("event_in_future"))
case("event_time: 100000000000 (= 1e11) is milliseconds, in 1973",
     ev(ts=100000000000), skip("event_too_old"))

# =========================== event_id (4.1) ===========================
case("event_id: integrations.facebook.event_id wins over root and context",
     ev(eid="ctx-id", event_id="root-id", integrations={"facebook": {"event_id": "int-id"}}),
     out(eid="int-id"))
case("event_id: root event_id wins over context.event_id (and is not copied to custom_data)",
     ev(eid="ctx-id", event_id="root-id"), out(eid="root-id"))
case("event_id: numeric integrations.facebook.event_id is sent as a string",
     ev(eid="ctx-id", integrations={"facebook": {"event_id": 12345}}), out(eid="12345"))
case("event_id: numeric context.event_id is sent as a string",
     ev(eid=987654321), out(eid="987654321"))
e1 = ev(eid=None, value=3, tag="a")
e2 = {"value": 3, "user": {"email": EMAIL},
      "context": {"device": {"user_agent": UA, "ip": IP}, "page": {"url": URL},
                  "event_timestamp": TS_MS},
      "tag": "a", "event_name": "page_view"}
assert canon_id(e1) == canon_id(e2)
case("event_id: deterministic id when absent (key order A)", e1,
     out(eid=canon_id(e1), cd={"value": 3, "tag": "a"}))
case("event_id: deterministic id when absent (same event, key order B, same id)", e2,
     out(eid=canon_id(e2), cd={"value": 3, "tag": "a"}))
e3 = ev(eid=None, ts=None)
case("event_id: deterministic id without timestamp does not depend on the clock", e3,
     out(eid=canon_id(e3), t=NOW))

# =========================== action_source (4.1) ===========================
case("action_source: valid override email needs no user agent or url",
     ev(ua=None, url=None, integrations={"facebook": {"action_source": "email"}}),
     out(source="email", url=None, ud=UD(client_user_agent=None)))
case("action_source: override not among Meta's values is invalid_event",
     ev(integrations={"facebook": {"action_source": "web"}}), skip("invalid_event"))
case("action_source: match-key gate runs before the action_source check",
     ev(user={}, ip=None, integrations={"facebook": {"action_source": "web"}}),
     skip("insufficient_match_keys"))
case("action_source: type offline is physical_store and needs no user agent or url",
     ev(ua=None, url=None, type="offline"),
     out(source="physical_store", url=None, ud=UD(client_user_agent=None)))
case("action_source: type Offline (other case) has no meaning",
     ev(type="Offline"), out())
case("action_source: override wins over type offline",
     ev(type="offline", integrations={"facebook": {"action_source": "phone_call"}}),
     out(source="phone_call"))
APP_CTX_FULL = {
    "event_id": "ev-app", "event_timestamp": TS_MS,
    "device": {"type": "android", "ip": IP, "advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
               "ad_tracking_enabled": True, "application_tracking_enabled": False,
               "os": {"version": "14"}, "model": "Pixel 8", "language": "fr_FR",
               "timezone_short": "CET", "network": {"carrier": "Orange"},
               "screen": {"width": 1080, "height": 2400, "density": 2.75},
               "cpu_core": 8, "storage": 128, "ex_storage": 64, "timezone": "Europe/Paris"},
    "app": {"namespace": "com.example.shop", "build": "4711", "version": "2.3.1"}}
case("app_tracking: action_source app, app_data with 16 extinfo strings, anon_id and madid",
     {"event_name": "add_to_cart", "context": APP_CTX_FULL, "user": {"email": EMAIL}},
     {"event_name": "AddToCart", "event_time": TS, "event_id": "ev-app", "action_source": "app",
      "user_data": {"em": EM, "client_ip_address": IP,
                    "anon_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
                    "madid": "38400000-8cf0-11bd-b23e-10b96e40000d"},
      "app_data": {"advertiser_tracking_enabled": True, "application_tracking_enabled": False,
                   "extinfo": ["a2", "com.example.shop", "4711", "2.3.1", "14", "Pixel 8",
                               "fr_FR", "CET", "Orange", "1080", "2400", "2.75", "8", "128",
                               "64", "Europe/Paris"]}},
     settings={"app_tracking": True})
case("app_tracking: ios device, unknown extinfo fields are empty strings",
     {"event_name": "page_view", "user": {"email": EMAIL},
      "context": {"event_id": "ev-ios", "event_timestamp": TS_MS,
                  "device": {"type": "ios", "ad_tracking_enabled": False,
                             "application_tracking_enabled": True, "model": "iPhone15,2"},
                  "app": {"version": "1.0"}}},
     {"event_name": "PageView", "event_time": TS, "event_id": "ev-ios", "action_source": "app",
      "user_data": {"em": EM},
      "app_data": {"advertiser_tracking_enabled": False, "application_tracking_enabled": True,
                   "extinfo": ["i2", "", "", "1.0", "", "iPhone15,2", "", "", "", "", "", "",
                               "", "", "", ""]}},
     settings={"app_tracking": True})
case("app_tracking wins over type offline",
     {"event_name": "page_view", "type": "offline", "user": {"email": EMAIL},
      "context": {"event_id": "ev-ao", "event_timestamp": TS_MS,
                  "device": {"type": "android", "ad_tracking_enabled": True,
                             "application_tracking_enabled": True}}},
     {"event_name": "PageView", "event_time": TS, "event_id": "ev-ao", "action_source": "app",
      "user_data": {"em": EM},
      "app_data": {"advertiser_tracking_enabled": True, "application_tracking_enabled": True,
                   "extinfo": ["a2"] + [""] * 15}},
     settings={"app_tracking": True})
e = ev()
e["context"]["device"]["advertising_id"] = "38400000-8cf0-11bd-b23e-10b96e40000d"
case("advertising_id is ignored for website events (no anon_id, madid, app_data)", e, out())

# =========================== source urls (4.1) ===========================
e = ev(url=None)
e["context"]["page"] = {"location": {"href": "https://shop.example/href"}}
case("event_source_url from context.page.location.href", e, out(url="https://shop.example/href"))
case("event_source_url from root url (not copied to custom_data)",
     ev(url=None, root={"url": "https://shop.example/root"}), out(url="https://shop.example/root"))
e = ev(url="https://shop.example/page", root={"url": "https://shop.example/root"})
e["context"]["page"]["location"] = {"href": "https://shop.example/href"}
case("event_source_url: context.page.url wins over location.href and root url", e,
     out(url="https://shop.example/page"))
e = ev(referrer="https://root.example/")
e["context"]["page"]["referrer"] = "https://ref.example/a"
case("referrer_url: context.page.referrer wins over root referrer", e,
     out(referrer_url="https://ref.example/a"))
case("referrer_url from root referrer (not copied to custom_data)",
     ev(referrer="https://root.example/"), out(referrer_url="https://root.example/"))

# =========================== opt_out, LDU (4.1) ===========================
case("opt_out true from integrations.facebook",
     ev(integrations={"facebook": {"opt_out": True}}), out(opt_out=True))
case("opt_out false is sent as false",
     ev(integrations={"facebook": {"opt_out": False}}), out(opt_out=False))
case("opt_out that is not a boolean is left out",
     ev(integrations={"facebook": {"opt_out": "yes"}}), out())
case("limited_data_use setting with a per-key country override from the event",
     ev(integrations={"facebook": {"data_processing_options_country": 1}}),
     out(data_processing_options=["LDU"], data_processing_options_country=1,
         data_processing_options_state=0),
     settings={"limited_data_use": True})
case("data processing options from the event without the setting keep country and state 0",
     ev(integrations={"facebook": {"data_processing_options": ["LDU"],
                                   "data_processing_options_country": 0,
                                   "data_processing_options_state": 0}}),
     out(data_processing_options=["LDU"], data_processing_options_country=0,
         data_processing_options_state=0))
case("no limited_data_use: no data processing options",
     ev(), out(), settings={"limited_data_use": False})

# =========================== user_data (4.3, 5) ===========================
FULL_USER = {"email": " John_Smith@Gmail.com ", "phone": "+33 6 12 34 56 78",
             "firstname": " Jean-Luc ", "lastname": "O'Neil Smith", "gender": "Female",
             "birthdate": "1990-01-31", "city": "San José 2", "state": "California",
             "zipcode": "94105-1234", "country": "USA", "id": " CRM-42 "}
case("user_data: every hashed key normalised and hashed",
     ev(user=FULL_USER),
     out(ud={"em": hv("em", FULL_USER["email"]), "ph": hv("ph", "+33 6 12 34 56 78"),
             "fn": hv("fn", " Jean-Luc "), "ln": hv("ln", "O'Neil Smith"), "ge": hv("ge", "Female"),
             "db": hv("db", "1990-01-31"), "ct": hv("ct", "San José 2"),
             "st": hv("st", "California"), "zp": hv("zp", "94105-1234"),
             "country": hv("country", "USA"), "external_id": hv("external_id", " CRM-42 "),
             "client_ip_address": IP, "client_user_agent": UA}))
assert hv("fn", " Jean-Luc ") == [sha("jeanluc")] and hv("ct", "San José 2") == [sha("sanjosé")]
case("user_data: array values, duplicates (also after normalisation) removed in order, invalid dropped",
     ev(user={"email": ["b@example.com", "A@Example.com", "b@example.com", "not-an-email",
                        "a@example.com"]}),
     out(ud=UD(em=[sha("b@example.com"), sha("a@example.com")])))
case("user_data: phone array keeps order",
     ev(user={"email": EMAIL, "phone": ["0044 20 7183 8750", "+1 (650) 555-1212"]}),
     out(ud=UD(ph=[sha("442071838750"), sha("16505551212")])))
D = "B4C9A289323B21A01C3E940F150EB9B8C542587F1ABFD8F0E1CC1FFC5E475514"
case("email_sha256 used when email is absent, sent lowercased",
     ev(user={"email_sha256": D}), out(ud=UD(em=[D.lower()])))
case("email_sha256 used when the plain email is dropped by normalisation",
     ev(user={"email": "john@localhost", "email_sha256": D}), out(ud=UD(em=[D.lower()])))
case("email_sha256 ignored when the plain email is valid",
     ev(user={"email": EMAIL, "email_sha256": D}), out())
case("invalid email_sha256 (63 hex) is dropped",
     ev(user={"email_sha256": D[:63], "phone": "+33612345678"}),
     out(ud=UD(em=None, ph=[sha("33612345678")])))
PH_D = sha("33612345678")
FN_D = sha("marie")
ID_D = sha("crm-42")
case("phone_sha256, firstname_sha256 and id_sha256 fallbacks",
     ev(user={"email": EMAIL, "phone_sha256": PH_D.upper(), "firstname_sha256": FN_D,
              "id_sha256": ID_D}),
     out(ud=UD(ph=[PH_D], fn=[FN_D], external_id=[ID_D])))
case("plain property that already is a 64-hex digest is passed through lowercased",
     ev(user={"email": "  " + D + " "}), out(ud=UD(em=[D.lower()])))
case("integrations user_data: pre-hashed em overrides user.email, lowercased",
     ev(integrations={"facebook": {"user_data": {"em": D}}}), out(ud=UD(em=[D.lower()])))
case("integrations user_data: raw values for hashed keys are normalised and hashed",
     ev(user={"email": EMAIL, "phone": "+1 650 555 1212"},
        integrations={"facebook": {"user_data": {"em": " Other@Example.ORG ",
                                                 "ph": "+33 6 12 34 56 78",
                                                 "external_id": " ABC 1 "}}}),
     out(ud=UD(em=[sha("other@example.org")], ph=[sha("33612345678")],
               external_id=[sha("abc1")])))
case("integrations user_data: non-hashed keys (ip, user agent, fbp) override",
     ev(integrations={"facebook": {"user_data": {"client_ip_address": "198.51.100.9",
                                                 "client_user_agent": "agent/2",
                                                 "fbp": "fb.1.1700000000000.99"}}}),
     out(ud=UD(client_ip_address="198.51.100.9", client_user_agent="agent/2",
               fbp="fb.1.1700000000000.99")))
case("client_ip_address: IPv6 literal", ev(ip="2001:db8::1"),
     out(ud=UD(client_ip_address="2001:db8::1")))
case("client_ip_address: IPv4-mapped IPv6 literal", ev(ip="::ffff:192.0.2.1"),
     out(ud=UD(client_ip_address="::ffff:192.0.2.1")))
case("client_ip_address: trimmed", ev(ip="  203.0.113.7 \t"), out())
case("client_ip_address: out-of-range IPv4 is dropped", ev(ip="999.1.1.1"),
     out(ud=UD(client_ip_address=None)))
case("client_ip_address: three-part IPv4 is dropped", ev(ip="10.1.2"),
     out(ud=UD(client_ip_address=None)))
case("client_ip_address: text is dropped", ev(ip="unknown"),
     out(ud=UD(client_ip_address=None)))

FBP1, FBP2, FBP3 = "fb.1.1700000000001.111", "fb.1.1700000000002.222", "fb.1.1700000000003.333"
FBC1, FBC2, FBC3 = "fb.1.1700000000001.AbC1", "fb.1.1700000000002.AbC2", "fb.1.1700000000003.AbC3"


def with_cookie(e, cookie=None, device_cookie=None):
    if cookie is not None:
        e["context"]["cookie"] = cookie
    if device_cookie is not None:
        e["context"]["device"]["cookie"] = device_cookie
    return e


case("fbp/fbc: integrations.facebook wins over root and cookie",
     with_cookie(ev(fbp=FBP2, fbc=FBC2, integrations={"facebook": {"fbp": FBP1, "fbc": FBC1}}),
                 f"_fbp={FBP3}; _fbc={FBC3}"),
     out(ud=UD(fbp=FBP1, fbc=FBC1)))
case("fbp/fbc: root wins over cookie (and are not copied to custom_data)",
     with_cookie(ev(fbp=FBP2, fbc=FBC2), f"_fbp={FBP3}; _fbc={FBC3}"),
     out(ud=UD(fbp=FBP2, fbc=FBC2)))
case("fbp/fbc from context.cookie",
     with_cookie(ev(), f"_ga=GA1.2.3;_fbp={FBP3};  _fbc={FBC3}; other=1"),
     out(ud=UD(fbp=FBP3, fbc=FBC3)))
case("context.device.cookie string wins over context.cookie",
     with_cookie(ev(), f"_fbp={FBP3}", f"_fbp={FBP2}"), out(ud=UD(fbp=FBP2)))
case("context.device.cookie that is not a string: context.cookie is used",
     with_cookie(ev(), f"_fbp={FBP3}", {"_fbp": FBP2}), out(ud=UD(fbp=FBP3)))
case("cookie name given twice: the first non-empty occurrence counts",
     with_cookie(ev(), f"_fbp=; _fbp={FBP1}; _fbp={FBP2}"), out(ud=UD(fbp=FBP1)))
case("cookie name must match exactly (x_fbp is not _fbp)",
     with_cookie(ev(), f"x_fbp={FBP1}; _fbp={FBP2}"), out(ud=UD(fbp=FBP2)))
case("malformed integrations fbp is dropped and later sources are not consulted",
     with_cookie(ev(fbp=FBP2, integrations={"facebook": {"fbp": "fb.1.abc.222"}}),
                 f"_fbp={FBP3}"), out())
case("malformed root fbc is dropped, cookie not consulted",
     with_cookie(ev(fbc="fb.1.1700000000000"), f"_fbc={FBC3}"), out())
case("malformed cookie fbp (empty payload) is dropped",
     with_cookie(ev(), "_fbp=fb.1.1700000000000."), out())
case("malformed cookie fbp (not starting with fb) is dropped",
     with_cookie(ev(), "_fbp=xx.1.1700000000000.42"), out())
case("fbp and fbc with a fifth (appendix) part are kept",
     with_cookie(ev(), "_fbp=fb.1.1700000000000.42.AQ; _fbc=fb.2.1700000000000.IwAR.Bg"),
     out(ud=UD(fbp="fb.1.1700000000000.42.AQ", fbc="fb.2.1700000000000.IwAR.Bg")))
U = "https://shop.example/p?utm=1&fbclid=IwAR2F4-dbP0l7Mn1_aB"
case("malformed _fbc cookie: no fbc, fbclid not consulted",
     with_cookie(ev(url=U), "_fbc=garbage"), out(url=U))
U2 = "https://shop.example/p?xfbclid=no&fbclid=Iw%2FAR_x-Y.z&b=2#frag"
case("fbc from fbclid: event_time*1000 (ms floored away), byte for byte, stops at & and #",
     ev(url=U2, ts=TS_MS + 789), out(url=U2, ud=UD(fbc=f"fb.1.{TS_MS}.Iw%2FAR_x-Y.z")))
U3 = "https://shop.example/p?a=1#fbclid=IwAR_in_fragment"
case("fbclid in the fragment is ignored", ev(url=U3), out(url=U3))
U4 = "https://shop.example/p?fbclid=IwARfromroot"
case("fbclid from the root url source of event_source_url",
     ev(url=None, root={"url": U4}), out(url=U4, ud=UD(fbc=f"fb.1.{TS_MS}.IwARfromroot")))
case("fbc built from fbclid is a strong key on its own",
     ev(url=U, user={}), out(url=U, ud=UD(em=None, fbc=f"fb.1.{TS_MS}.IwAR2F4-dbP0l7Mn1_aB")))
case("fb_login_id from partners.facebook",
     ev(partners={"facebook": {"fb_login_id": "1234567890"}}),
     out(ud=UD(fb_login_id="1234567890")))
case("external_id hashed: lowercased, white space deleted",
     ev(user={"email": EMAIL, "id": " CRM 42 X "}), out(ud=UD(external_id=[sha("crm42x")])))
case("external_id: numeric user.id hashed as its digits",
     ev(user={"email": EMAIL, "id": 12345}), out(ud=UD(external_id=[sha("12345")])))
case("external_id raw setting: trimmed, unhashed, case kept",
     ev(user={"email": EMAIL, "id": "  User-ABC  "}), out(ud=UD(external_id=["User-ABC"])),
     settings={"external_id": "raw"})
case("zp: 9 digits with country us keeps the first 5",
     ev(user={"email": EMAIL, "zipcode": "941051234", "country": "US"}),
     out(ud=UD(zp=[sha("94105")], country=[sha("us")])))
case("zp: 9 digits with country United States keeps the first 5",
     ev(user={"email": EMAIL, "zipcode": "941051234", "country": "United States"}),
     out(ud=UD(zp=[sha("94105")], country=[sha("us")])))
case("zp: 9 digits with another country is kept whole",
     ev(user={"email": EMAIL, "zipcode": "941051234", "country": "FR"}),
     out(ud=UD(zp=[sha("941051234")], country=[sha("fr")])))
case("zp: 9 digits without a country is kept whole",
     ev(user={"email": EMAIL, "zipcode": "941051234"}), out(ud=UD(zp=[sha("941051234")])))
case("zp: white space deleted, lowercased, one character dropped",
     ev(user={"email": EMAIL, "zipcode": [" NR9 5AL ", "7"]}), out(ud=UD(zp=[sha("nr95al")])))
case("user_data: values that fail normalisation are dropped, not the event",
     ev(user={"email": EMAIL, "phone": "n/a", "gender": "x", "birthdate": "not a date",
              "country": "Narnia", "firstname": " - ", "state": "12"}),
     out())
case("names: Unicode lower case kept (ÉLODIE), punctuation deleted",
     ev(user={"email": EMAIL, "firstname": "ÉLODIE", "lastname": "Dupont-Aignan"}),
     out(ud=UD(fn=[sha("élodie")], ln=[sha("dupontaignan")])))
case("st and country: Ontario -> on, Bayern stays, UK -> gb, DEU -> de",
     ev(user={"email": EMAIL, "state": ["Ontario", "Bayern"], "country": ["UK", "DEU"]}),
     out(ud=UD(st=[sha("on"), sha("bayern")], country=[sha("gb"), sha("de")])))
case("ge: synonyms map to m and f",
     ev(user={"email": EMAIL, "gender": ["Mr", "f", "lady"]}),
     out(ud=UD(ge=[sha("m"), sha("f")])))
case("db: D/M/Y when first > 12, US M/D/Y otherwise, 8 digits as is, year bound from now",
     ev(user={"email": EMAIL, "birthdate": ["31/12/1990", "02/03/1990", "19900131",
                                            "2026-06-01", "2027-01-01"]}),
     out(ud=UD(db=[sha("19901231"), sha("19900203"), sha("19900131"), sha("20260601")])))
assert n_db("2027-01-01") is None and n_db("02/03/1990") == "19900203"


case("integrations user_data: an invalid raw override drops the key (user.email not consulted)",
     ev(user={"email": EMAIL, "phone": "+33612345678"},
        integrations={"facebook": {"user_data": {"em": "not-an-email"}}}),
     out(ud=UD(em=None, ph=[sha("33612345678")])))
case("integrations user_data: an invalid client_ip_address override is dropped",
     ev(integrations={"facebook": {"user_data": {"client_ip_address": "bogus"}}}),
     out(ud=UD(client_ip_address=None)))
case("integrations user_data: a malformed fbp override is dropped",
     with_cookie(ev(integrations={"facebook": {"user_data": {"fbp": "fbp-garbage"}}}),
                 f"_fbp={FBP3}"), out())
case("client_ip_address: address with a port is dropped", ev(ip="203.0.113.7:8080"),
     out(ud=UD(client_ip_address=None)))
case("client_ip_address: bracketed IPv6 is dropped", ev(ip="[2001:db8::1]"),
     out(ud=UD(client_ip_address=None)))
case("user_data: numbers are taken as text (phone, zip code)",
     ev(user={"email": EMAIL, "phone": 33612345678, "zipcode": 75005}),
     out(ud=UD(ph=[sha("33612345678")], zp=[sha("75005")])))
case("st: Québec, New York, Puerto Rico, Washington D.C. (alias), CA kept",
     ev(user={"email": EMAIL, "state": ["Québec", "New York", "Puerto Rico",
                                        "Washington D.C.", "CA"]}),
     out(ud=UD(st=[sha("qc"), sha("ny"), sha("pr"), sha("dc"), sha("ca")])))
case("ct: non-Latin letters kept, digits and punctuation deleted",
     ev(user={"email": EMAIL, "city": ["Москва", "St. Louis 63101"]}),
     out(ud=UD(ct=[sha("москва"), sha("stlouis")])))
e = ev(url=None)
e["context"]["page"] = {"location": {"href": "https://shop.example/h?fbclid=FromHref"}}
case("fbc from the fbclid of a location.href event_source_url", e,
     out(url="https://shop.example/h?fbclid=FromHref", ud=UD(fbc=f"fb.1.{TS_MS}.FromHref")))

# =========================== custom_data (4.4) ===========================
case("custom_data step 1: reserved scalar keys are not copied",
     ev(type="web", source_key="sk-1", event_id="root-1", test_code="TEST1", fbp=FBP1,
        fbc=FBC1, root={"url": "https://shop.example/root", "referrer": "https://r.example/"},
        plan="gold"),
     out(eid="root-1", ud=UD(fbp=FBP1, fbc=FBC1), referrer_url="https://r.example/",
         cd={"plan": "gold"}))
case("custom_data step 1: partners and items given as scalars are not copied",
     ev(partners="p", items="i", plan="gold"), out(cd={"plan": "gold"}))
case("custom_data step 1: user, context, integrations given as scalars are not copied",
     {"event_name": "page_view", "type": "offline", "user": "u", "context": "c",
      "integrations": "i", "fbp": FBP1, "event_id": "e-1", "plan": "gold"},
     {"event_name": "PageView", "event_time": NOW, "event_id": "e-1",
      "action_source": "physical_store", "user_data": {"fbp": FBP1},
      "custom_data": {"plan": "gold"}})
case("custom_data step 1: numbers and booleans copied; arrays, objects and null are not",
     ev(count=3, ratio=0.25, logged_in=True, guest=False, tags=["a", "b"], meta={"k": "v"},
        nothing=None, label="x"),
     out(cd={"count": 3, "ratio": 0.25, "logged_in": True, "guest": False, "label": "x"}))
case("custom_data PII guard: e-mails and E.164 numbers (with separators) are not copied",
     ev(a="jane@example.com", b="Jane.Doe@Example.com", c="+1 (650) 555-1212",
        d="+33.6.12.34.56.78", e="+44 20-7183-8750", f="+12345678", keep="ok"),
     out(cd={"keep": "ok"}))
case("custom_data PII guard: short numbers, too long numbers and numbers without + are copied",
     ev(short="+1234567", long="+1234567890123456", local="0612345678", at="@home"),
     out(cd={"short": "+1234567", "long": "+1234567890123456", "local": "0612345678",
             "at": "@home"}))
case("custom_data: value numeric string is coerced to a number",
     ev("add_to_cart", value="12.50", currency="EUR"), out("AddToCart", cd={"value": 12.5, "currency": "EUR"}))
case("custom_data: non-numeric value removes the key",
     ev("add_to_cart", value="twelve", currency="EUR"), out("AddToCart", cd={"currency": "EUR"}))
case("custom_data: boolean value removes the key",
     ev("add_to_cart", value=True, plan="p"), out("AddToCart", cd={"plan": "p"}))
case("custom_data: only a non-numeric value leaves custom_data empty, so it is omitted",
     ev("add_to_cart", value="n/a"), out("AddToCart"))
case("custom_data: currency trimmed and upper-cased",
     ev("add_to_cart", value=1, currency=" usd "), out("AddToCart", cd={"value": 1, "currency": "USD"}))
case("custom_data: currency not in ISO 4217 is removed",
     ev("add_to_cart", value=1, currency="EURO"), out("AddToCart", cd={"value": 1}))
case("custom_data: order_id from id, status, search_string from search_term",
     ev("purchase", id="ORD-1", status="paid", search_term="lamp", value=5, currency="EUR"),
     out("Purchase", cd={"id": "ORD-1", "order_id": "ORD-1", "status": "paid",
                         "search_term": "lamp", "search_string": "lamp", "value": 5,
                         "currency": "EUR"}))
case("custom_data: net_revenue from partners.facebook (numeric string coerced)",
     ev(partners={"facebook": {"net_revenue": "12.30"}}), out(cd={"net_revenue": 12.3}))
case("custom_data: net_revenue number",
     ev(partners={"facebook": {"net_revenue": 7}}), out(cd={"net_revenue": 7}))
case("custom_data: non-numeric net_revenue is left out",
     ev(partners={"facebook": {"net_revenue": "lots"}}), out())
ITEMS = [{"product": {"id": "P-1", "price": "10.50", "name": "Lamp"}, "quantity": "2"},
         {"id": "I-2", "price": 3, "item_quantity": 4},
         {"product": {"name": "No id"}, "quantity": 1},
         {"product": {"id": "P-3"}, "quantity": "many", "price": "cheap"}]
case("contents: product fields, item-level fallbacks, coercion, items without id left out",
     ev("view_item_list", items=ITEMS),
     out("ViewContent", cd={"contents": [{"id": "P-1", "quantity": 2, "item_price": 10.5},
                                         {"id": "I-2", "quantity": 4, "item_price": 3},
                                         {"id": "P-3"}],
                            "content_ids": ["P-1", "I-2", "P-3"], "content_name": "Lamp",
                            "content_type": "product"}))
case("contents: product.id wins over item id, product.price over item price",
     ev("add_to_cart", items=[{"id": "I-1", "price": 99, "quantity": 1,
                               "product": {"id": "P-1", "price": 5}}]),
     out("AddToCart", cd={"contents": [{"id": "P-1", "quantity": 1, "item_price": 5}],
                          "content_ids": ["P-1"], "content_type": "product"}))
case("content_name and content_category: root name and category win over items",
     ev("view_item", root={"name": "Root Name", "category": "Root Cat"},
        items=[{"product": {"id": "P-1", "name": "Item Name", "category_1": "Item Cat"}}]),
     out("ViewContent", cd={"name": "Root Name", "category": "Root Cat",
                            "content_name": "Root Name", "content_category": "Root Cat",
                            "contents": [{"id": "P-1"}], "content_ids": ["P-1"],
                            "content_type": "product"}))
case("content_category: items in order first, then category_N in order",
     ev("view_item", items=[{"product": {"id": "P-1", "category_4": "D", "category_3": "C"}},
                            {"product": {"id": "P-2", "category_1": "A"}}]),
     out("ViewContent", cd={"contents": [{"id": "P-1"}, {"id": "P-2"}],
                            "content_ids": ["P-1", "P-2"], "content_category": "C",
                            "content_type": "product"}))
case("content_category: category_1 before category_2 whatever the key order",
     ev("view_item", items=[{"product": {"id": "P-1", "category_2": "B", "category_1": "A"}}]),
     out("ViewContent", cd={"contents": [{"id": "P-1"}], "content_ids": ["P-1"],
                            "content_category": "A", "content_type": "product"}))
case("content_name from a later item when the first has none",
     ev("view_item", items=[{"product": {"id": "P-1"}}, {"product": {"id": "P-2", "name": "Two"}}]),
     out("ViewContent", cd={"contents": [{"id": "P-1"}, {"id": "P-2"}],
                            "content_ids": ["P-1", "P-2"], "content_name": "Two",
                            "content_type": "product"}))
case("content_type product_group setting",
     ev("add_to_cart", items=[{"product": {"id": "G-1"}}]),
     out("AddToCart", cd={"contents": [{"id": "G-1"}], "content_ids": ["G-1"],
                          "content_type": "product_group"}),
     settings={"content_type": "product_group"})
case("content_type none setting with contents",
     ev("add_to_cart", items=[{"product": {"id": "G-1"}}]),
     out("AddToCart", cd={"contents": [{"id": "G-1"}], "content_ids": ["G-1"]}),
     settings={"content_type": "none"})
case("content_type only with contents: items without ids give no contents and no content_type",
     ev("add_to_cart", items=[{"product": {"name": "Nameless"}, "quantity": 2}]),
     out("AddToCart", cd={"content_name": "Nameless"}))
case("custom_data step 3: integrations.facebook.custom_data overwrites and adds",
     ev("add_to_cart", value=1, currency="EUR", plan="gold",
        integrations={"facebook": {"custom_data": {"value": 2.5, "plan": "silver",
                                                   "predicted_ltv": 100}}}),
     out("AddToCart", cd={"value": 2.5, "currency": "EUR", "plan": "silver",
                          "predicted_ltv": 100}))
case("custom_data step 3: null removes a key",
     ev("add_to_cart", value=1, currency="EUR", plan="gold",
        integrations={"facebook": {"custom_data": {"plan": None}}}),
     out("AddToCart", cd={"value": 1, "currency": "EUR"}))
case("custom_data step 3: overrides content_type and contents fields",
     ev("add_to_cart", items=[{"product": {"id": "P-1"}}],
        integrations={"facebook": {"custom_data": {"content_type": "product_group",
                                                   "content_ids": ["X"]}}}),
     out("AddToCart", cd={"contents": [{"id": "P-1"}], "content_ids": ["X"],
                          "content_type": "product_group"}))
case("custom_data omitted when the event has no custom properties", ev(), out())

# =========================== gates (4.5) ===========================
C4 = {"consent_category": "4"}
case("consent: array of numbers containing the category",
     ev(user={"email": EMAIL, "consent_categories": [1, 4]}), out(), settings=C4)
case("consent: array of strings with spaces, compared trimmed",
     ev(user={"email": EMAIL, "consent_categories": ["1", " 4 "]}), out(), settings=C4)
case("consent: comma-separated string, trimmed",
     ev(user={"email": EMAIL, "consent_categories": "1, 4 ,7"}), out(), settings=C4)
case("consent: single number",
     ev(user={"email": EMAIL, "consent_categories": 4}), out(), settings=C4)
case("consent: single string",
     ev(user={"email": EMAIL, "consent_categories": "4"}), out(), settings=C4)
case("consent: non-numeric category name",
     ev(user={"email": EMAIL, "consent_categories": ["advertising"]}), out(),
     settings={"consent_category": "advertising"})
case("consent: 14 and 24 are not 4",
     ev(user={"email": EMAIL, "consent_categories": "14,24"}), skip("no_consent"), settings=C4)
case("consent: empty array",
     ev(user={"email": EMAIL, "consent_categories": []}), skip("no_consent"), settings=C4)
case("consent gate runs before the match-key gate",
     ev(user={}, ip=None, ua=None), skip("no_consent"), settings=C4)
case("match keys: min_strong_keys 2 met by em and ph",
     ev(user={"email": EMAIL, "phone": "+33612345678"}),
     out(ud=UD(ph=[sha("33612345678")])), settings={"min_strong_keys": 2})
case("match keys: min_strong_keys 2 counts keys, not values (two e-mails, ip, ua)",
     ev(user={"email": [EMAIL, "b@example.com"]}), skip("insufficient_match_keys"),
     settings={"min_strong_keys": 2})
case("match keys: min_strong_keys 2 not met, but 3 other keys are",
     ev(user={"email": EMAIL, "country": "FR"}),
     out(ud=UD(country=[sha("fr")])), settings={"min_strong_keys": 2})
case("match keys: min_other_keys 2 with ip and ua",
     ev(user={}), out(ud=UD(em=None)), settings={"min_other_keys": 2})
case("match keys: min_strong_keys 0 lets an event without user data through",
     ev(user={}, ip=None), out(ud=UD(em=None, client_ip_address=None)),
     settings={"min_strong_keys": 0})
case("match keys: a dropped ip does not count",
     ev(user={"country": "FR"}, ip="300.1.1.1"), skip("insufficient_match_keys"))
case("match keys: dropped e-mail leaves no strong key",
     ev(user={"email": "nope"}), skip("insufficient_match_keys"))
case("match keys: external_id alone is a strong key",
     ev(user={"id": "u1"}, ip=None), out(ud=UD(em=None, client_ip_address=None,
                                                external_id=[sha("u1")])))
case("gate 3 order: missing user agent reported before missing url",
     ev(ua=None, url=None), skip("missing_user_agent"))
case("missing url for a website event",
     ev(url=None), skip("missing_source_url"))
case("gate 3 order: missing url before purchase without value",
     ev("purchase", url=None), skip("missing_source_url"))
case("gate 3 order: purchase without value before too old",
     ev("purchase", ts=(NOW - 30 * DAY) * 1000), skip("purchase_without_value"))
case("purchase with a non-numeric value is not sent",
     ev("purchase", value="abc", currency="EUR"), skip("purchase_without_value"))
case("purchase with an invalid currency is not sent",
     ev("purchase", value=5, currency="EURO"), skip("purchase_without_value"))
case("purchase with value and currency from the custom_data override is sent",
     ev("purchase", integrations={"facebook": {"custom_data": {"value": 9, "currency": "EUR"}}}),
     out("Purchase", cd={"value": 9, "currency": "EUR"}))
case("age: exactly 7 days old is sent",
     ev(ts=(NOW - 7 * DAY) * 1000), out(t=NOW - 7 * DAY))
case("age: 7 days and 1 second old is too old",
     ev(ts=(NOW - 7 * DAY - 1) * 1000), skip("event_too_old"))
case("age: physical_store exactly 62 days old is sent",
     ev(ts=(NOW - 62 * DAY) * 1000, type="offline"),
     out(t=NOW - 62 * DAY, source="physical_store"))
case("age: physical_store 62 days and 1 second old is too old",
     ev(ts=(NOW - 62 * DAY - 1) * 1000, type="offline"), skip("event_too_old"))
case("age: website event 30 days old is too old",
     ev(ts=(NOW - 30 * DAY) * 1000), skip("event_too_old"))
case("future: exactly 600 s ahead is sent",
     ev(ts=(NOW + 600) * 1000), out(t=NOW + 600))
case("future: 601 s ahead is not sent",
     ev(ts=(NOW + 601) * 1000), skip("event_in_future"))
case("age: the now of the case is the clock (same event, later clock is too old)",
     ev(ts=TS_MS), skip("event_too_old"), now=TS + 8 * DAY)

case("age: action_source override physical_store gets the 62-day limit",
     ev(ts=(NOW - 30 * DAY) * 1000, integrations={"facebook": {"action_source": "physical_store"}}),
     out(t=NOW - 30 * DAY, source="physical_store"))
case("purchase with value 0 is sent (0 is a value)",
     ev("purchase", value="0", currency="EUR"), out("Purchase", cd={"value": 0, "currency": "EUR"}))
case("match keys: anon_id and madid count as other keys for app events",
     {"event_name": "page_view", "user": {},
      "context": {"event_id": "ev-app2", "event_timestamp": TS_MS,
                  "device": {"ip": IP, "advertising_id": "AAAA-1",
                             "ad_tracking_enabled": True, "application_tracking_enabled": True}}},
     {"event_name": "PageView", "event_time": TS, "event_id": "ev-app2", "action_source": "app",
      "user_data": {"client_ip_address": IP, "anon_id": "AAAA-1", "madid": "AAAA-1"},
      "app_data": {"advertiser_tracking_enabled": True, "application_tracking_enabled": True,
                   "extinfo": [""] * 16}},
     settings={"app_tracking": True})

# =========================== parse errors (2, 8) ===========================
case("not an object: array", "[{\"event_name\":\"page_view\"}]", skip("invalid_event"))
case("not an object: string", "\"page_view\"", skip("invalid_event"))
case("not an object: number", "42", skip("invalid_event"))
case("not an object: null", "null", skip("invalid_event"))
case("event_name missing", {"context": {"event_id": "x"}, "user": {"email": EMAIL}},
     skip("invalid_event"))
case("event_name empty", ev(""), skip("invalid_event"))
case("event_name not a string", ev(42), skip("invalid_event"))
case("duplicate top-level key",
     '{"event_name":"page_view","value":1,"value":2}', skip("invalid_event"))
case("duplicate nested key",
     '{"event_name":"page_view","user":{"email":"a@b.co","email":"c@d.co"}}',
     skip("invalid_event"))
case("truncated JSON", '{"event_name":"page_view","user":{"email":"a@b.co"',
     skip("invalid_json"))
case("not JSON at all", "event_name=page_view", skip("invalid_json"))
case("lone surrogate escape is not valid UTF-8",
     '{"event_name":"page_view","note":"\\ud800"}', skip("invalid_json"))
case("NUL escape in a string", '{"event_name":"page_view","note":"a\\u0000b"}',
     skip("invalid_json"))


def nested(depth):
    """An event whose nesting depth (root object = 1) is `depth`."""
    inner = "1"
    for _ in range(depth - 1):
        inner = '{"x":' + inner + "}"
    return inner


deep32 = ev(deep=None)
deep32.pop("deep")
d = 1
node = {}
deep32["deep"] = node
d = 2
while d < 32:
    nxt = {}
    node["x"] = nxt
    node = nxt
    d += 1
node["x"] = 1
case("nesting depth 32 is accepted", deep32, out())
case("nesting depth 33 is invalid_json",
     '{"event_name":"page_view","deep":' + nested(33) + "}", skip("invalid_json"))


def depth(v):
    if isinstance(v, dict):
        return 1 + max([depth(x) for x in v.values()] or [0])
    if isinstance(v, list):
        return 1 + max([depth(x) for x in v] or [0])
    return 0


assert depth(deep32) == 32, depth(deep32)
assert depth(json.loads('{"event_name":"page_view","deep":' + nested(33) + "}")) == 33

# exact size limit: 32768 bytes accepted, 32769 rejected (raw text input)
def sized(n):
    head = '{"event_name":"page_view","context":{"event_id":"ev-1","event_timestamp":%d,' \
           '"page":{"url":"%s"},"device":{"ip":"%s","user_agent":"%s"}},' \
           '"user":{"email":"%s"},"blob":"' % (TS_MS, URL, IP, UA, EMAIL)
    t = head + "z" * (n - len(head) - 2) + '"}'
    assert len(t.encode()) == n
    return t


case("event of exactly 32768 bytes is accepted", sized(32768),
     out(cd={"blob": json.loads(sized(32768))["blob"]}))
case("event of 32769 bytes is too_large", sized(32769), skip("too_large"))
# the same event spelled differently (escapes) has the same deterministic id
RAW_A = ('{"event_name":"page_view","note":"café a/b","context":{"event_timestamp":%d,'
         '"page":{"url":"%s"},"device":{"ip":"%s","user_agent":"%s"}},"user":{"email":"%s"}}'
         % (TS_MS, URL, IP, UA, EMAIL))
RAW_B = RAW_A.replace("café a/b", "caf\\u00e9 a\\/b").replace(' ', ' ')
assert json.loads(RAW_A) == json.loads(RAW_B) and RAW_A != RAW_B
CID = canon_id(json.loads(RAW_A))
case("event_id: deterministic id, raw spelling A (é, /)", RAW_A,
     out(eid=CID, cd={"note": "café a/b"}))
case("event_id: deterministic id, raw spelling B (\\u00e9, \\/) gives the same id", RAW_B,
     out(eid=CID, cd={"note": "café a/b"}))

json.dump(CASES, sys.stdout, indent=1, ensure_ascii=False)
sys.stdout.write("\n")
print(f"{len(CASES)} cases", file=sys.stderr)
