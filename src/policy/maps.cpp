// SPDX-License-Identifier: MIT
// maps.cpp - address rules, the local domain set and the sender login map (see maps.hpp).
//
// Loaders run at start and on SIGHUP; per-request lookups build keys on the stack (no allocation
// for addresses of ordinary length). Built tables are read-only. SECURITY: map files are trusted
// config; request values are untrusted and only compared, never interpreted.
// XXX: recipient_delimiter splitting omits Postfix's exceptions (postmaster, MAILER-DAEMON,
// owner-foo and foo-request with a '-' delimiter); ownership keys rarely need them.
#include <relayguard/maps.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <relayguard/strings.hpp>

namespace relayguard {
namespace {

// Lookup keys up to this long are built on the stack. RFC 5321 caps a path at 256 octets, so
// only malformed input (or a very odd domain) takes the heap fallback.
constexpr std::size_t inline_key_bytes = 320;
// Longest domain name in text form (RFC 1035: 255 octets on the wire, 253 as text).
constexpr std::size_t max_domain_chars = 253;
// How much of a map file value is quoted in an error message.
constexpr std::size_t max_quoted_bytes = 80;

constexpr char fold(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// White space of map files: Postfix's readllines treats any ISSPACE() byte so.
constexpr bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view drop_trailing_dot(std::string_view domain) noexcept
{
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    return domain;
}

// KeyBuilder - a normalized lookup key, on the stack unless it is unusually long.
class KeyBuilder {
public:
    // build - local (folded unless case-sensitive) + "@" + domain (folded, trailing dot dropped)
    // when with_at; local alone otherwise.
    std::string_view build(std::string_view local, bool with_at, std::string_view domain, bool fold_local)
    {
        domain = drop_trailing_dot(domain);
        const std::size_t n = local.size() + (with_at ? 1 + domain.size() : 0);
        char* out = buf_.data();
        if (n > buf_.size()) {
            heap_.resize(n);
            out = heap_.data();
        }
        char* p = out;
        for (char c : local) *p++ = fold_local ? fold(c) : c;
        if (with_at) {
            *p++ = '@';
            for (char c : domain) *p++ = fold(c);
        }
        return {out, n};
    }

private:
    std::array<char, inline_key_bytes> buf_;
    std::string heap_;
};

// read_whole_file - the file's bytes, or errno. fread (not ifstream) so that reading a
// directory or an I/O error is reported with its real cause.
int read_whole_file(const std::string& path, std::string& out)
{
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return errno;
    char chunk[8192];
    std::size_t n = 0;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) out.append(chunk, n);
    const int err = std::ferror(f) ? (errno != 0 ? errno : EIO) : 0;
    std::fclose(f);
    return err;
}

ConfigError unreadable(const std::string& path, int err)
{
    return ConfigError{path, 0, "", std::string("cannot read: ") + std::strerror(err)};
}

// Lines - iterate over the lines of a file's text, numbered from 1, "\r\n" tolerated.
class Lines {
public:
    explicit Lines(std::string_view text) : text_(text) {}
    bool next(std::string_view& line)
    {
        if (pos_ >= text_.size()) return false;
        auto nl = text_.find('\n', pos_);
        if (nl == std::string_view::npos) nl = text_.size();
        line = text_.substr(pos_, nl - pos_);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        pos_ = nl + 1;
        ++number_;
        return true;
    }
    unsigned number() const noexcept { return number_; }

private:
    std::string_view text_;
    std::size_t pos_ = 0;
    unsigned number_ = 0;
};

std::string_view skip_blanks(std::string_view s) noexcept
{
    while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
    return s;
}

// first_field - the text up to the first white space.
std::string_view first_field(std::string_view s) noexcept
{
    std::size_t i = 0;
    while (i < s.size() && !is_blank(s[i])) ++i;
    return s.substr(0, i);
}

// Postfix map source: a line whose first non-blank byte is '#' is a comment.
bool is_comment_or_blank(std::string_view line) noexcept
{
    line = skip_blanks(line);
    return line.empty() || line.front() == '#';
}

// domain_problem - why `domain` (as written in a file) is not a domain name, or nullptr.
// A leading '.' (a parent entry) is allowed only when allow_parent.
const char* domain_problem(std::string_view domain, bool allow_parent) noexcept
{
    if (allow_parent && !domain.empty() && domain.front() == '.') domain.remove_prefix(1);
    domain = drop_trailing_dot(domain);
    if (domain.empty()) return "empty domain";
    if (domain.size() > max_domain_chars) return "longer than 253 characters";
    bool label_empty = true;
    for (unsigned char c : domain) {
        if (c == '.') {
            if (label_empty) return "empty label";
            label_empty = true;
            continue;
        }
        label_empty = false;
        if (c == '@') return "contains '@'";
        // Letters, digits, '-' and '_' (seen in real host names), and UTF-8 for SMTPUTF8 domains.
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c >= 0x80;
        if (!ok) return "invalid character";
    }
    if (label_empty) return "empty label";
    return nullptr;
}

std::string quoted(std::string_view s) { return "\"" + sanitize(s, max_quoted_bytes) + "\""; }

bool listed(const std::vector<std::string>& logins, std::string_view login) noexcept
{
    return std::any_of(logins.begin(), logins.end(), [&](const std::string& l) { return iequals(l, login); });
}

} // namespace

AddressParts split_address(std::string_view address) noexcept
{
    const auto at = address.rfind('@');
    if (at == std::string_view::npos) return {address, {}};
    return {address.substr(0, at), address.substr(at + 1)};
}

std::string normalize_domain(std::string_view domain)
{
    return ascii_lower(drop_trailing_dot(domain));
}

std::string normalize_address(std::string_view address, const AddressConfig& rules)
{
    const auto parts = split_address(address);
    KeyBuilder key;
    return std::string(key.build(parts.local, address.find('@') != std::string_view::npos, parts.domain,
                                 !rules.local_part_case_sensitive));
}

AddressParts strip_extension_parts(std::string_view address, const AddressConfig& rules) noexcept
{
    auto parts = split_address(address);
    if (rules.recipient_delimiter.empty()) return parts;
    const auto cut = parts.local.find_first_of(rules.recipient_delimiter);
    // Postfix split_addr: never split when that would leave an empty local part ("+foo@d").
    if (cut != std::string_view::npos && cut > 0) parts.local = parts.local.substr(0, cut);
    return parts;
}

std::string strip_extension(std::string_view address, const AddressConfig& rules)
{
    const auto parts = strip_extension_parts(address, rules);
    const auto whole = split_address(address);
    if (parts.local.size() == whole.local.size()) return std::string(address);
    std::string out(parts.local);
    if (address.find('@') != std::string_view::npos) {
        out += '@';
        out += parts.domain;
    }
    return out;
}

bool same_address(AddressParts a, AddressParts b, const AddressConfig& rules) noexcept
{
    if (!iequals(drop_trailing_dot(a.domain), drop_trailing_dot(b.domain))) return false;
    return rules.local_part_case_sensitive ? a.local == b.local : iequals(a.local, b.local);
}

void DomainSet::add(std::string_view domain)
{
    std::string d = normalize_domain(domain);
    // "" and "." name nothing; storing them would make every unqualified address local.
    if (d.empty() || d == ".") return;
    if (d.front() == '.')
        parents_.insert(std::move(d));
    else
        exact_.insert(std::move(d));
}

bool DomainSet::contains(std::string_view domain) const
{
    KeyBuilder kb;
    const std::string_view d = kb.build(domain, false, {}, true);
    const std::string_view name = drop_trailing_dot(d);
    if (name.empty()) return false;
    if (exact_.find(name) != exact_.end()) return true;
    if (parents_.empty()) return false;
    // ".example.com" matches every proper subdomain: try each suffix that starts at a '.' past
    // the first label, so the cost grows with the labels of the name, not the size of the set.
    for (auto dot = name.find('.', 1); dot != std::string_view::npos; dot = name.find('.', dot + 1))
        if (parents_.find(name.substr(dot)) != parents_.end()) return true;
    return false;
}

boost::system::result<DomainSet, ConfigError> load_domain_file(const std::string& path, DomainSet into)
{
    std::string text;
    if (const int err = read_whole_file(path, text); err != 0) return unreadable(path, err);

    Lines lines(text);
    std::string_view line;
    while (lines.next(line)) {
        if (is_comment_or_blank(line)) continue;
        // Postfix-map style ("example.com  OK"): the domain is the first field, the rest is ignored.
        const auto domain = first_field(skip_blanks(line));
        if (const char* why = domain_problem(domain, true))
            return ConfigError{path, lines.number(), "", "invalid domain " + quoted(domain) + ": " + why};
        into.add(domain);
    }
    return into;
}

void SenderLoginMap::add(std::string_view key, std::string_view login, const AddressConfig& rules)
{
    const auto parts = split_address(key);
    KeyBuilder kb;
    const auto k = kb.build(parts.local, key.find('@') != std::string_view::npos, parts.domain,
                            !rules.local_part_case_sensitive);
    auto it = map_.find(k);
    if (it == map_.end()) it = map_.emplace(std::string(k), std::vector<std::string>{}).first;
    if (!listed(it->second, login)) it->second.emplace_back(login);
}

bool SenderLoginMap::owners_match(std::string_view address, std::string_view login, const AddressConfig& rules) const
{
    if (map_.empty()) return false;
    const bool fold_local = !rules.local_part_case_sensitive;
    const bool has_at = address.find('@') != std::string_view::npos;
    const auto parts = split_address(address);
    KeyBuilder kb;

    // The first key found decides, also when it does not list the login: a full-address entry
    // overrides the @domain entry, as in Postfix's smtpd_sender_login_maps lookups.
    auto found = map_.find(kb.build(parts.local, has_at, parts.domain, fold_local));
    if (found != map_.end()) return listed(found->second, login);

    const auto stripped = strip_extension_parts(address, rules);
    if (stripped.local.size() != parts.local.size()) {
        found = map_.find(kb.build(stripped.local, has_at, stripped.domain, fold_local));
        if (found != map_.end()) return listed(found->second, login);
    }

    if (!has_at) return false; // an unqualified address has no domain to look up
    found = map_.find(kb.build({}, true, parts.domain, fold_local));
    return found != map_.end() && listed(found->second, login);
}

boost::system::result<SenderLoginMap, ConfigError> load_sender_login_map(const std::string& path,
                                                                         const AddressConfig& rules)
{
    std::string text;
    if (const int err = read_whole_file(path, text); err != 0) return unreadable(path, err);

    // One logical entry: its key, its first line number, and the text of its value so far.
    struct Entry {
        std::string_view key;
        unsigned line = 0;
        std::vector<std::string_view> value_parts;
    };
    SenderLoginMap map;
    TransparentStringSet seen; // normalized keys of earlier entries
    std::optional<ConfigError> error;

    // finish - validate one logical entry and add it, unless its key came earlier: postmap keeps
    // the first of duplicate keys (it also warns; a loader without a warning channel does not).
    auto finish = [&](const Entry& e) -> bool {
        const auto at = e.key.rfind('@');
        if (at == std::string_view::npos) {
            error = ConfigError{path, e.line, "", "key " + quoted(e.key) + " is not user@domain or @domain"};
            return false;
        }
        const auto domain = e.key.substr(at + 1);
        if (const char* why = domain_problem(domain, false)) {
            error = ConfigError{path, e.line, "", "key " + quoted(e.key) + ": invalid domain: " + why};
            return false;
        }
        std::vector<std::string_view> logins;
        for (auto part : e.value_parts) {
            // Logins are separated by commas and/or white space.
            std::size_t i = 0;
            while (i < part.size()) {
                while (i < part.size() && (part[i] == ',' || is_blank(part[i]))) ++i;
                const std::size_t start = i;
                while (i < part.size() && part[i] != ',' && !is_blank(part[i])) ++i;
                if (i > start) logins.push_back(part.substr(start, i - start));
            }
        }
        if (logins.empty()) {
            error = ConfigError{path, e.line, "", "key " + quoted(e.key) + " has no login"};
            return false;
        }
        std::string norm = normalize_address(e.key, rules);
        if (seen.find(norm) != seen.end()) return true;
        seen.insert(std::move(norm));
        for (auto login : logins) map.add(e.key, login, rules);
        return true;
    };

    std::optional<Entry> current;
    Lines lines(text);
    std::string_view line;
    while (lines.next(line)) {
        // postmap(1): blank and comment lines are ignored and do not end a logical line.
        if (is_comment_or_blank(line)) continue;
        if (is_blank(line.front())) {
            // A line that starts with white space continues the logical line before it.
            if (!current)
                return ConfigError{path, lines.number(), "", "continuation line without an entry before it"};
            current->value_parts.push_back(line);
            continue;
        }
        if (current && !finish(*current)) return *error;
        const auto key = first_field(line);
        current = Entry{key, lines.number(), {line.substr(key.size())}};
    }
    if (current && !finish(*current)) return *error;
    return map;
}

} // namespace relayguard
