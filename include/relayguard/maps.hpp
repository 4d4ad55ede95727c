// SPDX-License-Identifier: MIT
// maps.hpp - lookup tables the checks read: local domains and sender ownership.
//
// Both are loaded from files at start and on SIGHUP and then never change (a reload builds new
// ones). Thread-safe once built. Address comparison rules come from AddressConfig.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/system/result.hpp>

#include <relayguard/config.hpp>

namespace relayguard {

// split_address - local part and domain of "local@domain" at the last '@'. An address without
// '@' has an empty domain. Angle brackets are not expected (Postfix sends bare addresses).
struct AddressParts {
    std::string_view local;
    std::string_view domain;
};
AddressParts split_address(std::string_view address) noexcept;

// normalize_domain - lower case, one trailing dot dropped.
std::string normalize_domain(std::string_view domain);

// normalize_address - the form addresses are compared in: domain lower-cased, local part folded
// unless local_part_case_sensitive. The extension is kept (see strip_extension).
std::string normalize_address(std::string_view address, const AddressConfig& rules);

// strip_extension - "user+ext@d" -> "user@d" for the configured recipient_delimiter (each
// character of it is a delimiter, as in Postfix). Returns the input if there is none.
std::string strip_extension(std::string_view address, const AddressConfig& rules);

// strip_extension_parts - strip_extension() as views into `address`, without allocating.
AddressParts strip_extension_parts(std::string_view address, const AddressConfig& rules) noexcept;

// same_address - whether normalize_address() of both would be equal, without allocating.
bool same_address(AddressParts a, AddressParts b, const AddressConfig& rules) noexcept;

// Hash for string keys that are looked up by string_view (no temporary std::string).
struct TransparentStringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TransparentStringSet = std::unordered_set<std::string, TransparentStringHash, std::equal_to<>>;

// Local domains: exact names, and ".parent" entries that match every subdomain of parent.
class DomainSet {
public:
    void add(std::string_view domain); // normalized on the way in
    bool contains(std::string_view domain) const; // domain as received; normalized here
    std::size_t size() const noexcept { return exact_.size() + parents_.size(); }

private:
    TransparentStringSet exact_;
    TransparentStringSet parents_; // ".example.com"
};

// load_domain_file - one domain per line; blank lines and '#' comments ignored; also accepts a
// Postfix-style map (the first field of each line is the domain). Errors name file:line.
boost::system::result<DomainSet, ConfigError> load_domain_file(const std::string& path, DomainSet into = {});

// Which logins own which sender addresses: Postfix smtpd_sender_login_maps format,
// `user@domain  login1, login2` or `@domain  login`, '#' comments, continuation lines that start
// with white space. Keys compare as AddressConfig says; logins compare case-insensitively.
// A key given twice in one file: the first entry is kept, as postmap does.
class SenderLoginMap {
public:
    void add(std::string_view key, std::string_view login, const AddressConfig& rules);

    // owners_match - whether `login` is listed for `address`: the full address first, then
    // (with a recipient_delimiter) the address without extension, then "@domain" - the first
    // key found decides, as Postfix's lookup order does.
    bool owners_match(std::string_view address, std::string_view login, const AddressConfig& rules) const;

    std::size_t size() const noexcept { return map_.size(); }

private:
    // normalized key -> logins as written
    std::unordered_map<std::string, std::vector<std::string>, TransparentStringHash, std::equal_to<>> map_;
};

boost::system::result<SenderLoginMap, ConfigError> load_sender_login_map(const std::string& path,
                                                                         const AddressConfig& rules);

} // namespace relayguard
