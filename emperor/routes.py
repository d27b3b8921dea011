"""uWSGI's internal routing, as written in a vassal file: the options, the grammar, what emperor runs.

Shared by the config reader (which refuses a malformed rule and names, with its file and line,
an action or condition emperor does not implement) and by the worker, which compiles the rules
once when it starts (emperor/worker/routing.py). The grammar is uWSGI's core/routing.c
(`uwsgi_opt_add_route`): a rule is `SUBJECT-TEST ACTION:ARG`, split at the first space, the
action at its first colon; `route-if` splits its condition at its first colon; `route-run`
has no test; `route-label` is a label. The `request` chain is `route*`; `error-route*` runs
when a response status is set, `final-route*` after the response went out (InternalRouting
doc, "The routing chains"). The `response-route*` chain is not implemented (an unsupported
option, so the reader says so).
"""
from __future__ import annotations

import re
from collections import namedtuple

# option suffix -> the request variable a regexp rule tests (core/uwsgi.c: uwsgi_opt_add_route's "subject")
SUBJECTS = {
    "": "PATH_INFO", "-host": "HTTP_HOST", "-uri": "REQUEST_URI", "-qs": "QUERY_STRING",
    "-remote-addr": "REMOTE_ADDR", "-user-agent": "HTTP_USER_AGENT", "-remote-user": "REMOTE_USER",
    "-referer": "HTTP_REFERER",
}
CHAINS = {"route": "request", "error-route": "error", "final-route": "final"}

# every routing option -> (chain, kind); kind: a variable name (regexp on it), "if", "if-not",
# "run", "label" or "status" (error and final chains only)
OPTIONS: dict[str, tuple[str, str]] = {}
for _prefix, _chain in CHAINS.items():
    OPTIONS.update({_prefix + suffix: (_chain, var) for suffix, var in SUBJECTS.items()})
    OPTIONS.update({f"{_prefix}-{kind}": (_chain, kind) for kind in ("if", "if-not", "run", "label")})
    if _chain != "request":
        OPTIONS[_prefix + "-status"] = (_chain, "status")

# Actions emperor runs (uWSGI's names, aliases included); `setvar` is not uWSGI's (it has addvar).
FLOW = {"continue", "last", "break", "goto"}
ACTIONS = FLOW | {
    "return", "break-with-status", "log", "logvar", "donotlog", "addvar", "setvar", "addheader", "delheader",
    "remheader", "redirect", "redirect-302", "redirect-permanent", "redirect-301", "rewrite", "rewrite-last",
    "basicauth", "basicauth-next", "static",
}
# what answers the request: meaningless once the response went out (the final chain)
RESPONDING = {"return", "break-with-status", "redirect", "redirect-302", "redirect-permanent", "redirect-301",
              "basicauth", "basicauth-next", "static", "addheader", "delheader", "remheader", "rewrite",
              "rewrite-last"}
# route-if conditions (core/routing.c registers these names); those taking "subject;pattern"
CONDITIONS_2 = {"equal", "isequal", "eq", "==", "startswith", "endswith", "regexp", "re", "contains", "contain",
                "ishigher", ">", "islower", "<", "ishigherequal", ">=", "islowerequal", "<="}
CONDITIONS_1 = {"empty", "isfile", "isdir", "exists", "islink", "isexec"}
CONDITIONS = CONDITIONS_2 | CONDITIONS_1
# ${name[arg]} routing variables emperor knows (InternalRouting doc, "Pluggable routing variables")
ROUTE_VARS = {"qs", "cookie", "upper", "lower", "mime", "time", "httptime", "hex", "base64"}

_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")

# chain, kind (as OPTIONS), test (regexp, condition argument, status), cond (route-if's condition
# name), action, arg: one rule as written, checked for syntax only
Rule = namedtuple("Rule", "option chain kind test cond action arg")


def pcre(pattern: str) -> re.Pattern[str]:
    """A PCRE pattern as Python's `re` reads it: `(?<name>...)` is `(?P<name>...)`."""
    try:
        return re.compile(_NAMED_GROUP.sub("(?P<", pattern))
    except re.error as e:
        raise ValueError(f'bad regexp "{pattern}": {e}') from None


def parse(option: str, text: str) -> Rule:
    """One routing option's value; ValueError (uWSGI exits on these) when malformed."""
    chain, kind = OPTIONS[option]
    if kind == "label":
        if not text:
            raise ValueError("expected a label name")
        return Rule(option, chain, kind, text, "", "", "")
    test = cond = ""
    command = text
    if kind != "run":
        test, space, command = text.partition(" ")
        if not space:
            raise ValueError(f'invalid route syntax "{text}": expected "{"CONDITION" if "if" in kind else "TEST"} '
                             f'ACTION:ARG"')
        if kind in ("if", "if-not"):
            cond, colon, test = test.partition(":")
            if not colon:
                raise ValueError(f'invalid route condition "{cond}": expected "condition:arguments"')
            if cond in ("regexp", "re") and ";" in test:
                pcre(test.partition(";")[2])
        elif kind == "status":
            if not test.isdigit():
                raise ValueError(f'expected a status code, got "{test}"')
        else:
            pcre(test)
    action, colon, arg = command.strip().partition(":")
    if not colon:
        raise ValueError(f'invalid route action "{command}": expected "action:argument"')
    return Rule(option, chain, kind, test, cond, action, arg)


def unsupported(rule: Rule) -> list[str]:
    """What emperor cannot do of this rule, one message each."""
    out = []
    if rule.cond and rule.cond not in CONDITIONS:
        out.append(f'route condition "{rule.cond}" is not supported by emperor; rule ignored')
    if rule.kind != "label" and rule.action not in ACTIONS:
        out.append(f'route action "{rule.action}" is not supported by emperor; rule ignored')
    elif rule.chain == "final" and rule.action in RESPONDING:
        out.append(f'route action "{rule.action}" has no effect in the final chain (the response is sent); '
                   f"rule ignored")
    for m in _VAR_RE.finditer(rule.test + " " + rule.arg):
        name, bracket, _ = m.group(1).partition("[")
        if bracket and name not in ROUTE_VARS:
            out.append(f'routing variable "{name}[...]" is not supported by emperor; it expands to ""')
    return out


def ignored(rule: Rule) -> bool:
    """A rule the worker leaves out (`unsupported` said why)."""
    return bool(rule.cond and rule.cond not in CONDITIONS) or (
        rule.kind != "label" and (rule.action not in ACTIONS or (rule.chain == "final" and rule.action in RESPONDING)))


def chains(items: list[tuple[str, str]]) -> dict[str, list[Rule]]:
    """Config.routes ((option, value) in file order) as the three chains of rules."""
    out: dict[str, list[Rule]] = {"request": [], "error": [], "final": []}
    for option, text in items:
        rule = parse(option, text)
        out[rule.chain].append(rule)
    return out


def labels(rules: list[Rule]) -> dict[str, int]:
    """label -> its position in its chain (goto's target, as uWSGI counts: labels included)."""
    return {r.test: i for i, r in enumerate(rules) if r.kind == "label"}


def problems(items: list[tuple[str, str]]) -> list[tuple[int, str, bool]]:
    """Warnings for Config.routes, as (index in `items`, message, whether it is something emperor
    does not implement): that, and a `goto` to a label its chain lacks (uWSGI then ends the request)."""
    out: list[tuple[int, str, bool]] = []
    where: dict[str, list[int]] = {"request": [], "error": [], "final": []}
    rules = [parse(option, text) for option, text in items]
    for i, rule in enumerate(rules):
        where[rule.chain].append(i)
        out += [(i, message, True) for message in unsupported(rule)]
    for chain, indexes in where.items():
        chain_rules = [rules[i] for i in indexes]
        known = labels(chain_rules)
        for pos, rule in enumerate(chain_rules):
            target = rule.arg.strip()
            if rule.action == "goto" and "$" not in target and not target.isdigit():
                if target not in known:
                    out.append((indexes[pos], f'goto "{target}": no route-label "{target}" in the {chain} chain',
                                False))
                elif known[target] < pos:
                    out.append((indexes[pos], f'goto "{target}": jumps backwards, which uWSGI refuses '
                                              f"(the request ends there)", False))
    return sorted(out)
