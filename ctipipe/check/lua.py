"""A Wireshark dissector for the CTI protocol, written in Lua from the rule table
(rules.py): `cticheck --wireshark-lua > cti.lua`, then
`wireshark -X lua_script:cti.lua` (or copy it to Wireshark's plugins folder).

One tree item per message on TCP port 5003, with its class, its function or
command, and the rules of one message a dissector can apply without a JSON
parser or the session's history as expert info: F1 (not an object, no class),
F2 (a server message without timenow), L3 (the password field of each
version), M1 (a missing required field), M3 (an unknown or removed class),
M4 (an unknown function or command). Keys are found by pattern at any depth
of the message, so a nested key of the same name can hide a missing one.
"""
from __future__ import annotations

from ctipipe.check import rules as R

PORT = 5003  # the CTI server's client port


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua_list(items) -> str:
    return "{" + ", ".join(_lua_string(item) for item in items) + "}"


def _classes() -> str:
    lines = []
    for name, spec in sorted(R.CLIENT_CLASSES.items()):
        parts = [f"required = {_lua_list(spec.get('required', {}))}"]
        if spec.get("dispatch"):
            parts.append(f"dispatch = {_lua_string(spec['dispatch'])}")
            parts.append("dispatch_required = " + ("true" if spec.get("dispatch_required")
                                                    else "false"))
            variants = ", ".join(f"[{_lua_string(value)}] = {_lua_list(variant.get('required', {}))}"
                                 for value, variant in sorted(spec["variants"].items()))
            parts.append(f"variants = {{{variants}}}")
        lines.append(f"  [{_lua_string(name)}] = {{{', '.join(parts)}}},")
    return "\n".join(lines)


def _removed(table: dict) -> str:
    return "\n".join(f"  [{_lua_string(name)}] = {_lua_string(why)},"
                     for name, (_, why) in sorted(table.items()))


def _rules() -> str:
    return "\n".join(f"  {rule.id} = {_lua_string(rule.says)},"
                     for rule in R.RULES if rule.id in ("F1", "F2", "L3", "M1", "M3", "M4"))


def dissector() -> str:
    """The Lua source of the dissector."""
    return _TEMPLATE.replace("@PORT@", str(PORT)).replace("@CLASSES@", _classes()).replace(
        "@REMOVED_CLASSES@", _removed(R.REMOVED_CLASSES)).replace(
        "@REMOVED_COMMANDS@", _removed(R.REMOVED_COMMANDS)).replace("@RULES@", _rules()).replace(
        "@CLOSES@", _lua_string(R.CLOSES)).replace("@IGNORES@", _lua_string(R.IGNORES))


_TEMPLATE = r'''-- XiVO / Wazo CTI protocol dissector, written by `cticheck --wireshark-lua` (ctipipe)
-- from its rule table: regenerate it rather than edit it.
-- Load: wireshark -X lua_script:cti.lua   (or copy to the personal Lua plugins folder)
-- Messages are newline-delimited JSON objects on TCP port @PORT@. Keys are found by
-- pattern at any depth, so a nested key can hide a missing one; the protocol version
-- is not known here, so L3 only says which version each password field belongs to.

local cti = Proto("cti", "XiVO CTI protocol")
local f_class = ProtoField.string("cti.class", "Class")
local f_dispatch = ProtoField.string("cti.function", "Function or command")
local f_from = ProtoField.string("cti.from", "From")
local f_text = ProtoField.string("cti.json", "Message")
cti.fields = {f_class, f_dispatch, f_from, f_text}

local e_closes = ProtoExpert.new("cti.closes", "CTI rule broken: the server closes the connection",
                                 expert.group.MALFORMED, expert.severity.ERROR)
local e_ignored = ProtoExpert.new("cti.ignored", "CTI rule broken: the server ignores the message",
                                  expert.group.PROTOCOL, expert.severity.WARN)
local e_note = ProtoExpert.new("cti.note", "CTI rule", expert.group.PROTOCOL, expert.severity.NOTE)
cti.experts = {e_closes, e_ignored, e_note}

local PORT = @PORT@
local CLOSES = @CLOSES@
local IGNORES = @IGNORES@

-- The client classes the server understands, their required fields, and the
-- values of the field they are dispatched on (ctipipe/check/rules.py).
local CLASSES = {
@CLASSES@
}
local REMOVED_CLASSES = {
@REMOVED_CLASSES@
}
local REMOVED_COMMANDS = {
@REMOVED_COMMANDS@
}
local RULES = {
@RULES@
}

local function has_key(text, key)
  return text:find('"' .. key:gsub("%p", "%%%0") .. '"%s*:') ~= nil
end

local function string_value(text, key)
  return text:match('"' .. key:gsub("%p", "%%%0") .. '"%s*:%s*"([^"]*)"')
end

local function add_finding(item, tvbrange, expert_info, rule, text)
  item:add_proto_expert_info(expert_info, "[" .. rule .. "] " .. text)
end

local function check_client(line, item, range)
  local name = string_value(line, "class")
  local spec = CLASSES[name]
  if spec == nil then
    local why = REMOVED_CLASSES[name]
    add_finding(item, range, e_ignored, "M3", "no class " .. name .. (why and (" (" .. why .. ")") or "")
                .. "; " .. IGNORES)
    return
  end
  if name == "login_pass" then
    if has_key(line, "hashedpassword") and not has_key(line, "password") then
      add_finding(item, range, e_note, "L3", "hashedpassword: protocol 1.2; 2.x expects password")
    elseif not has_key(line, "hashedpassword") and not has_key(line, "password") then
      add_finding(item, range, e_closes, "L3", "login_pass without password; " .. CLOSES)
    end
  end
  local required = spec.required
  if spec.dispatch ~= nil then
    local which = string_value(line, spec.dispatch)
    item:add(f_dispatch, range, which or "")
    if which == nil then
      if spec.dispatch_required then
        add_finding(item, range, e_closes, "M1", name .. ' needs "' .. spec.dispatch .. '"; ' .. CLOSES)
      else
        add_finding(item, range, e_ignored, "M4", name .. ' without "' .. spec.dispatch .. '"; ' .. IGNORES)
      end
      return
    end
    required = spec.variants[which]
    if required == nil then
      local why = name == "ipbxcommand" and REMOVED_COMMANDS[which] or nil
      add_finding(item, range, e_ignored, "M4", name .. " " .. spec.dispatch .. " " .. which
                  .. " is unknown" .. (why and (" (" .. why .. ")") or "") .. "; " .. IGNORES)
      return
    end
  end
  for _, key in ipairs(spec.required) do
    if not has_key(line, key) then
      add_finding(item, range, e_closes, "M1", name .. ' needs "' .. key .. '"; ' .. CLOSES)
    end
  end
  if required ~= spec.required then
    for _, key in ipairs(required) do
      if not has_key(line, key) then
        add_finding(item, range, e_closes, "M1", name .. ' needs "' .. key .. '"; ' .. CLOSES)
      end
    end
  end
end

local function dissect_line(line, tvbrange, tree, from_client)
  local name = string_value(line, "class")
  local item = tree:add(cti, tvbrange, "CTI " .. (from_client and "client" or "server") .. ": "
                        .. (name or "?"))
  item:add(f_from, tvbrange, from_client and "client" or "server")
  item:add(f_class, tvbrange, name or "")
  item:add(f_text, tvbrange, line)
  if not line:match("^%s*{") then
    add_finding(item, tvbrange, from_client and e_closes or e_note, "F1",
                "not a JSON object" .. (from_client and ("; " .. CLOSES) or ""))
    return name
  end
  if name == nil then
    if from_client then
      add_finding(item, tvbrange, e_closes, "F1", "no class; " .. CLOSES)
    end
    return name
  end
  if from_client then
    check_client(line, item, tvbrange)
  elseif not has_key(line, "timenow") then
    add_finding(item, tvbrange, e_note, "F2", RULES.F2)
  end
  return name
end

-- The server's port: the one the dissector was matched on (tcp.port @PORT@, or the
-- port given by Decode As / -d tcp.port==P,cti), else the preference.
cti.prefs.port = Pref.uint("Server port", PORT, "The CTI server's TCP port: what is sent to "
                           .. "it comes from the client")
local registered = PORT

function cti.prefs_changed()
  if cti.prefs.port ~= registered then
    DissectorTable.get("tcp.port"):remove(registered, cti)
    registered = cti.prefs.port
    DissectorTable.get("tcp.port"):add(registered, cti)
  end
end

local function server_port(pinfo)
  local matched = pinfo.match_uint
  if matched ~= nil and matched ~= 0
      and (pinfo.src_port == matched or pinfo.dst_port == matched) then
    return matched
  end
  return cti.prefs.port
end

function cti.dissector(tvb, pinfo, tree)
  local length = tvb:len()
  local from_client = pinfo.dst_port == server_port(pinfo)
  local offset = 0
  local names = {}
  while offset < length do
    local rest = tvb:raw(offset, length - offset)
    local newline = rest:find("\n", 1, true)
    if newline == nil then
      pinfo.desegment_offset = offset
      pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
      break
    end
    local line = rest:sub(1, newline - 1):gsub("\r$", "")
    local name = dissect_line(line, tvb(offset, newline), tree, from_client)
    names[#names + 1] = name or "?"
    offset = offset + newline
  end
  if #names > 0 then
    pinfo.cols.protocol = "CTI"
    pinfo.cols.info = (from_client and "C>S " or "S>C ") .. table.concat(names, ", ")
  end
  return length
end

DissectorTable.get("tcp.port"):add(PORT, cti)
'''
