// SPDX-License-Identifier: MIT
// relayguardctl_main.cpp - relayguardctl: arguments, config, the Redis connection, dispatch.
//
// Wiring only (STYLE.md): parse the command line against the command table below, load the
// daemon's config, connect to its Redis (waiting at most ctl::connect_wait), run one command
// (src/ctl/) on an io_context on this thread, exit with its status: 0 ok, 1 not found, refused
// or failed, 2 usage error. Options may come before or after the command words.
#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/core.h>

#include <relayguard/config.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/redis.hpp>

#include "ctl/ctl.hpp"

namespace {

namespace asio = boost::asio;
using namespace relayguard;
using ctl::exit_failure;
using ctl::exit_ok;
using ctl::exit_usage;

// Where the Debian package installs the config (the daemon's default too).
constexpr std::string_view default_config_path = "/etc/relayguard/relayguard.toml";
// How often the connection is looked at while waiting for it: short against connect_wait.
constexpr std::chrono::milliseconds connect_poll{10};

// Options a command may take besides --config, --json and --help.
enum Option : unsigned {
    opt_limit = 1u << 0,
    opt_reason = 1u << 1,
    opt_for = 1u << 2,
    opt_by = 1u << 3,
};

// Whether a command takes a KEY (--login ... --global).
enum class KeyUse : unsigned char { none, required, optional, login_required, login_optional };

struct CommandSpec {
    std::string_view path;     // "limits set"
    std::string_view synopsis; // what follows "relayguardctl PATH" in its usage line
    std::string_view details;  // the body of its --help
    KeyUse key;
    unsigned options;
    std::size_t min_args; // positional arguments after the path
    std::size_t max_args;
};

constexpr std::size_t many = 10000;

constexpr std::string_view key_help =
    "KEY (one of):\n"
    "  --login LOGIN             a login (sasl_username); --login @DOMAIN: every login in DOMAIN\n"
    "  --sender ADDRESS          an envelope sender; --sender @DOMAIN: every sender in DOMAIN\n"
    "  --sender-domain DOMAIN    a sender domain\n"
    "  --client ADDRESS[/LEN]    a client address or network (192.0.2.7, 192.0.2.0/24, 2001:db8::/64)\n"
    "  --recipient-domain DOMAIN a recipient domain\n"
    "  --global                  the one counter of key = \"global\" limits\n";

constexpr std::string_view option_help =
    "options:\n"
    "  -c, --config FILE  the daemon's configuration (default: /etc/relayguard/relayguard.toml)\n"
    "      --json         one line of JSON on standard output, for scripts\n"
    "  -h, --help         show this help and exit\n"
    "exit status: 0 ok, 1 not found, refused or failed, 2 usage error\n";

constexpr CommandSpec commands[] = {
    {"limits set", "KEY LIMIT RATES",
     "Store KEY's override of LIMIT in Redis; the daemon applies it to its very next request.\n"
     "RATES: \"COUNT/PERIOD, ...\" (periods s, m, h, d, w), \"unlimited\", \"0\" (refuse everything)\n"
     "or \"inherit\" (remove the override, as `limits unset`). LIMIT must be a [[limit]] of the\n"
     "config keyed by KEY's kind; a --client network must have that limit's prefix length.\n"
     "An override of --login @DOMAIN (or --sender @DOMAIN) applies to every login (sender) of\n"
     "DOMAIN that has none of its own.\n"
     "example: relayguardctl limits set --login alice@example.com login_messages \"500/1h, 5000/1d\"\n",
     KeyUse::required, 0, 2, 2},
    {"limits get", "KEY LIMIT",
     "Show KEY's override of LIMIT, its domain's, the config default and the rates in effect.\n",
     KeyUse::required, 0, 1, 1},
    {"limits unset", "KEY LIMIT",
     "Remove KEY's override of LIMIT: KEY inherits again (its domain's override, else the config).\n"
     "Exit status 1 if there was none. LIMIT need not be in the config any more.\n",
     KeyUse::required, 0, 1, 1},
    {"limits list", "[KEY]",
     "With KEY: every limit of the config keyed by KEY's kind, the rates in effect for KEY and\n"
     "where they come from (KEY's override, its domain's override, or the config default), and\n"
     "overrides of KEY that no limit reads. Without KEY: every override stored in Redis.\n",
     KeyUse::optional, 0, 0, 0},
    {"usage", "KEY [--limit LIMIT]",
     "For each limit keyed by KEY's kind (or LIMIT only): every window's used and remaining units\n"
     "and the time until it is full again, and how often the limit refused, computed from the state\n"
     "stored in Redis by the daemon's own script (nothing is changed). A --client address is\n"
     "counted as the network of each limit's prefix length.\n",
     KeyUse::required, opt_limit, 0, 0},
    {"reset", "KEY [--limit LIMIT]",
     "Forget KEY's counters: of every limit, or of LIMIT only. The next request starts afresh.\n"
     "A --client address resets the network each limit counts it in. Exit status 1 if there\n"
     "were no counters.\n",
     KeyUse::required, opt_limit, 0, 0},
    {"suspend", "--login LOGIN --reason TEXT [--for DURATION] [--by NAME]",
     "Suspend LOGIN: until lifted with `unsuspend`, or for DURATION (90s, 30m, 12h, 7d, 1w; a bare\n"
     "number is seconds), after which the suspension ends by itself. Recorded with the reason,\n"
     "the time, and \"operator NAME\" (default: the invoking user, $SUDO_USER if set).\n"
     "Suspending a suspended login replaces its suspension.\n",
     KeyUse::login_required, opt_reason | opt_for | opt_by, 0, 0},
    {"unsuspend", "--login LOGIN", "Lift LOGIN's suspension. Exit status 1 if it is not suspended.\n",
     KeyUse::login_required, 0, 0, 0},
    {"suspended", "[--login LOGIN]",
     "List suspended logins with the reason, since when, until when, and by whom (an operator,\n"
     "or \"automatic\" for the compromise check). With --login: that login only, exit status 1\n"
     "if it is not suspended.\n",
     KeyUse::login_optional, 0, 0, 0},
    {"owners add", "ADDRESS|@DOMAIN LOGIN...",
     "Let each LOGIN use ADDRESS (or every address of @DOMAIN) as envelope sender, on top of the\n"
     "map file of the config. Stored in Redis (lower case).\n",
     KeyUse::none, 0, 2, many},
    {"owners remove", "ADDRESS|@DOMAIN LOGIN...",
     "Take ADDRESS (or @DOMAIN) away from each LOGIN. Exit status 1 if none of them had it.\n", KeyUse::none, 0, 2,
     many},
    {"owners list", "[ADDRESS|@DOMAIN]",
     "The logins that own ADDRESS (or @DOMAIN) in Redis; without an argument, every entry.\n"
     "Exit status 1 if ADDRESS has no owners in Redis.\n",
     KeyUse::none, 0, 0, 1},
    {"domains add", "DOMAIN...",
     "Add local domains (\".example.com\": every subdomain of example.com), on top of the config's.\n",
     KeyUse::none, 0, 1, many},
    {"domains remove", "DOMAIN...", "Remove local domains from Redis. Exit status 1 if none was there.\n",
     KeyUse::none, 0, 1, many},
    {"domains list", "", "The local domains stored in Redis (the config's own are not listed).\n", KeyUse::none, 0, 0,
     0},
    {"check", "[FILE|-]",
     "Read policy requests (the wire format: name=value lines, an empty line after each) from FILE\n"
     "or standard input, and run each through the whole pipeline against the config and the\n"
     "store, consuming nothing: every check's verdict, the limits that apply with their remaining\n"
     "quota, and the reply the daemon would give. With store.type = \"embedded\" the quotas are\n"
     "those of a key value with nothing counted (the daemon's counters are in its memory).\n"
     "example: relayguardctl check tests/data/samples/postfix-3.7/auth_plain.policy\n",
     KeyUse::none, 0, 0, 1},
};

constexpr std::string_view groups[] = {"limits", "owners", "domains"};

const CommandSpec* find_command(std::string_view path)
{
    for (const auto& c : commands)
        if (c.path == path) return &c;
    return nullptr;
}

bool is_group(std::string_view word)
{
    for (auto g : groups)
        if (g == word) return true;
    return false;
}

void print_main_help(std::FILE* to)
{
    std::string text = "usage: relayguardctl [--config FILE] [--json] COMMAND [ARGUMENTS]\n\n"
                       "The operator's tool of relayguard: rate-limit overrides, usage and resets, suspensions,\n"
                       "sender owners and local domains in the daemon's Redis, and dry runs of policy requests.\n\n"
                       "commands:\n";
    for (const auto& c : commands) text += fmt::format("  {} {}\n", c.path, c.synopsis);
    text += "`relayguardctl COMMAND --help` describes each.\n\n";
    text += key_help;
    text += "  -V, --version      show the version and exit\n";
    text += option_help;
    std::fputs(text.c_str(), to);
}

void print_group_help(std::FILE* to, std::string_view group)
{
    std::string text = fmt::format("usage: relayguardctl {} SUBCOMMAND ...\n\nsubcommands:\n", group);
    for (const auto& c : commands)
        if (c.path.starts_with(group) && c.path.size() > group.size() && c.path[group.size()] == ' ')
            text += fmt::format("  relayguardctl {} {}\n", c.path, c.synopsis);
    text += fmt::format("`relayguardctl {} SUBCOMMAND --help` describes each.\n", group);
    std::fputs(text.c_str(), to);
}

void print_command_help(std::FILE* to, const CommandSpec& c)
{
    std::string text = fmt::format("usage: relayguardctl {} {}\n\n{}\n", c.path, c.synopsis, c.details);
    if (c.key == KeyUse::required || c.key == KeyUse::optional) text += key_help;
    text += option_help;
    std::fputs(text.c_str(), to);
}

// What the command line says.
struct Invocation {
    std::string config_path{default_config_path};
    bool json = false;
    bool help = false;
    bool version = false;
    std::vector<std::string> words; // positional, the command words first
    std::optional<ctl::KeyArg> key;
    std::string key_option;          // as given, for messages
    std::vector<std::string> given;  // other options given, for applicability
    std::string limit;
    std::optional<std::string> reason;
    std::optional<std::string> duration;
    std::optional<std::string> by;
    const CommandSpec* command = nullptr;
    std::vector<std::string> args; // positional after the command words
};

struct KeyOption {
    std::string_view name;
    LimitKey key;
    bool takes_value;
};
constexpr KeyOption key_options[] = {
    {"--login", LimitKey::sasl_username, true},         {"--sender", LimitKey::sender, true},
    {"--sender-domain", LimitKey::sender_domain, true}, {"--client", LimitKey::client_address, true},
    {"--recipient-domain", LimitKey::recipient_domain, true}, {"--global", LimitKey::global, false},
};

// parse_arguments - fill `inv` from argv. Returns why when the command line is malformed
// (the command, if it could be found, is set for the usage line).
std::optional<std::string> parse_arguments(int argc, char** argv, Invocation& inv)
{
    std::optional<std::string> error;
    auto fail = [&](std::string why) {
        if (!error) error = std::move(why);
    };
    bool options_done = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (options_done || arg == "-" || !arg.starts_with("-")) {
            inv.words.emplace_back(arg);
            continue;
        }
        if (arg == "--") {
            options_done = true;
            continue;
        }
        // --name=value or --name value (and -c FILE, -cFILE).
        std::string_view name = arg;
        std::optional<std::string> inline_value;
        if (arg.starts_with("--")) {
            if (auto eq = arg.find('='); eq != std::string_view::npos) {
                name = arg.substr(0, eq);
                inline_value = std::string(arg.substr(eq + 1));
            }
        } else if (arg.starts_with("-c") && arg.size() > 2) {
            name = "-c";
            inline_value = std::string(arg.substr(2));
        }
        auto value = [&](std::string_view option) -> std::optional<std::string> {
            if (inline_value) return inline_value;
            if (i + 1 >= argc) {
                fail(fmt::format("option {} needs a value", option));
                return std::nullopt;
            }
            return std::string(argv[++i]);
        };

        if (name == "--json") {
            inv.json = true;
        } else if (name == "--help" || name == "-h") {
            inv.help = true;
        } else if (name == "--version" || name == "-V") {
            inv.version = true;
        } else if (name == "--config" || name == "-c") {
            if (auto v = value(name)) {
                if (v->empty()) fail(fmt::format("option {} needs a FILE", name));
                inv.config_path = *v;
            }
        } else if (name == "--limit") {
            if (auto v = value(name)) inv.limit = *v;
            inv.given.emplace_back(name);
        } else if (name == "--reason") {
            if (auto v = value(name)) inv.reason = *v;
            inv.given.emplace_back(name);
        } else if (name == "--for") {
            if (auto v = value(name)) inv.duration = *v;
            inv.given.emplace_back(name);
        } else if (name == "--by") {
            if (auto v = value(name)) inv.by = *v;
            inv.given.emplace_back(name);
        } else {
            const KeyOption* key = nullptr;
            for (const auto& k : key_options)
                if (k.name == name) key = &k;
            if (!key) {
                fail(fmt::format("unknown option {}", name));
                continue;
            }
            if (inv.key) {
                fail(fmt::format("give one KEY, not both {} and {}", inv.key_option, name));
                continue;
            }
            ctl::KeyArg k{key->key, {}};
            if (key->takes_value) {
                auto v = value(name);
                if (!v) continue;
                k.text = *v;
            } else if (inline_value) {
                fail(fmt::format("option {} takes no value", name));
            }
            inv.key = std::move(k);
            inv.key_option = std::string(name);
        }
    }

    // The command: one word, or a group and its subcommand.
    if (inv.words.empty()) {
        if (!inv.help && !inv.version) fail("no command given");
        return error;
    }
    std::string path = inv.words[0];
    std::size_t used = 1;
    if (is_group(path)) {
        if (inv.words.size() < 2) {
            if (!inv.help) fail(fmt::format("{} needs a subcommand", path));
            return error;
        }
        path += " " + inv.words[1];
        used = 2;
    }
    inv.command = find_command(path);
    if (!inv.command) {
        fail(fmt::format("unknown command {}", path));
        return error;
    }
    inv.args.assign(inv.words.begin() + static_cast<std::ptrdiff_t>(used), inv.words.end());
    if (error || inv.help) return error;

    // Arguments and options against the command.
    const CommandSpec& c = *inv.command;
    if (inv.args.size() < c.min_args) return fmt::format("{}: missing arguments", c.path);
    if (inv.args.size() > c.max_args)
        return fmt::format("{}: unexpected argument {}", c.path, inv.args[c.max_args]);
    for (const auto& option : inv.given) {
        const unsigned bit = option == "--limit" ? opt_limit
                             : option == "--reason" ? opt_reason
                             : option == "--for"    ? opt_for
                                                    : opt_by;
        if (!(c.options & bit)) return fmt::format("{}: option {} does not apply", c.path, option);
    }
    switch (c.key) {
    case KeyUse::none:
        if (inv.key) return fmt::format("{}: option {} does not apply", c.path, inv.key_option);
        break;
    case KeyUse::required:
        if (!inv.key) return fmt::format("{}: give a KEY (--login, --sender, --sender-domain, --client, "
                                         "--recipient-domain or --global)",
                                         c.path);
        break;
    case KeyUse::optional: break;
    case KeyUse::login_required:
        if (!inv.key) return fmt::format("{}: give --login LOGIN", c.path);
        [[fallthrough]];
    case KeyUse::login_optional:
        if (inv.key && inv.key->key != LimitKey::sasl_username)
            return fmt::format("{}: option {} does not apply (give --login)", c.path, inv.key_option);
        break;
    }
    if (inv.key)
        if (auto why = ctl::validate_key_arg(*inv.key)) return *why;
    if ((c.options & opt_reason) && !inv.reason) return fmt::format("{}: give --reason TEXT", c.path);
    if (inv.duration) {
        const auto d = ctl::parse_duration(*inv.duration);
        if (!d || d->count() <= 0 || *d > ctl::max_suspension)
            return fmt::format("--for: '{}' is not a duration of 1s to 366d (90s, 30m, 12h, 7d, 1w)", *inv.duration);
    }
    if ((c.options & opt_limit) && !inv.limit.empty() && inv.limit.find_first_of(" \t") != std::string::npos)
        return fmt::format("--limit: '{}' is not a limit name", inv.limit);
    return std::nullopt;
}

// wait_connected - whether the client is up within `limit`.
asio::awaitable<bool> wait_connected(redis::Client& client, std::chrono::milliseconds limit)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!client.connected()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) co_return false;
        timer.expires_after(std::min<std::chrono::steady_clock::duration>(connect_poll, deadline - now));
        co_await timer.async_wait(asio::use_awaitable);
    }
    co_return true;
}

// dispatch - run the parsed command.
asio::awaitable<int> dispatch(ctl::Session& s, const Invocation& inv, const Snapshot* snapshot,
                              const std::string& input)
{
    const std::string_view path = inv.command->path;
    const auto& a = inv.args;
    if (path == "limits set") co_return co_await ctl::limits_set(s, *inv.key, a[0], a[1]);
    if (path == "limits get") co_return co_await ctl::limits_get(s, *inv.key, a[0]);
    if (path == "limits unset") co_return co_await ctl::limits_unset(s, *inv.key, a[0]);
    if (path == "limits list") co_return co_await ctl::limits_list(s, inv.key);
    if (path == "usage") co_return co_await ctl::usage(s, *inv.key, inv.limit);
    if (path == "reset") co_return co_await ctl::reset(s, *inv.key, inv.limit);
    if (path == "suspend") {
        std::optional<std::chrono::seconds> duration;
        if (inv.duration) duration = ctl::parse_duration(*inv.duration);
        co_return co_await ctl::suspend(s, inv.key->text, *inv.reason, duration, inv.by.value_or(""));
    }
    if (path == "unsuspend") co_return co_await ctl::unsuspend(s, inv.key->text);
    if (path == "suspended") {
        std::optional<std::string> login;
        if (inv.key) login = inv.key->text;
        co_return co_await ctl::suspended(s, login);
    }
    if (path == "owners add" || path == "owners remove") {
        const std::vector<std::string> logins(a.begin() + 1, a.end());
        co_return co_await ctl::owners_change(s, path == "owners add", a[0], logins);
    }
    if (path == "owners list") {
        std::optional<std::string> key;
        if (!a.empty()) key = a[0];
        co_return co_await ctl::owners_list(s, key);
    }
    if (path == "domains add" || path == "domains remove") co_return co_await ctl::domains_change(s, path == "domains add", a);
    if (path == "domains list") co_return co_await ctl::domains_list(s);
    if (path == "check") co_return co_await ctl::check(s, *snapshot, input);
    s.out.error(fmt::format("{}: not implemented", path)); // the table and this list disagree: our bug
    co_return exit_failure;
}

int run(const Invocation& inv)
{
    const ctl::Output out(inv.json, stdout, stderr);
    const bool is_check = inv.command->path == "check";

    // check reads the files the config names (domains, owners), as the daemon does; the other
    // commands need only the config itself, so an unreadable map file does not stop them.
    std::shared_ptr<const Snapshot> snapshot;
    std::optional<Config> loaded;
    if (is_check) {
        auto s = load_snapshot(inv.config_path);
        if (!s) {
            out.error(s.error().to_string());
            return exit_failure;
        }
        snapshot = *s;
    } else {
        auto c = load_config(inv.config_path);
        if (!c) {
            out.error(c.error().to_string());
            return exit_failure;
        }
        loaded = std::move(*c);
    }
    const Config& config = snapshot ? snapshot->config : *loaded;

    std::string input;
    if (is_check) {
        std::string why;
        auto text = ctl::read_check_input(inv.args.empty() ? std::string("-") : inv.args[0], &why);
        if (!text) {
            out.error(why);
            return exit_failure;
        }
        input = std::move(*text);
    }

    const bool redis_store = config.store.type == StoreConfig::Type::redis;
    if (!redis_store && !is_check) {
        out.error(fmt::format("store.type is \"embedded\" in {}: rate-limit state lives inside each relayguard "
                              "process and there is no Redis for relayguardctl to talk to; `{}` needs "
                              "store.type = \"redis\"",
                              config.path, inv.command->path));
        return exit_failure;
    }

    ctl::capture_logs();
    asio::io_context context(1);
    std::unique_ptr<redis::Client> client;
    if (redis_store) {
        client = std::make_unique<redis::Client>(context.get_executor(), config.store.redis);
        client->start();
    }
    ctl::Session session{config, client.get(), out};
    int status = exit_failure;
    asio::co_spawn(
        context,
        [&]() -> asio::awaitable<void> {
            if (client && !co_await wait_connected(*client, ctl::connect_wait)) {
                std::string why = ctl::connect_error();
                if (why.empty()) why = fmt::format("no connection within {} ms", ctl::connect_wait.count());
                out.error(fmt::format("cannot reach redis {}: {}", config.store.redis.address, why));
            } else {
                status = co_await dispatch(session, inv, snapshot.get(), input);
            }
            if (client) client->close();
        },
        [&](std::exception_ptr e) {
            if (!e) return;
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                out.error(fmt::format("internal error: {}", x.what()));
            }
            status = exit_failure;
            if (client) client->close();
        });
    context.run();
    return status;
}

} // namespace

int main(int argc, char** argv)
{
    Invocation inv;
    const auto error = parse_arguments(argc, argv, inv);
    if (inv.help) {
        if (inv.command)
            print_command_help(stdout, *inv.command);
        else if (!inv.words.empty() && is_group(inv.words[0]))
            print_group_help(stdout, inv.words[0]);
        else
            print_main_help(stdout);
        return exit_ok;
    }
    if (inv.version && inv.words.empty() && !error) {
        fmt::print("relayguardctl {}\n", RELAYGUARD_VERSION);
        return exit_ok;
    }
    if (error) {
        fmt::print(stderr, "relayguardctl: {}\n", *error);
        if (inv.command)
            fmt::print(stderr, "usage: relayguardctl {} {}\n(relayguardctl {} --help describes it)\n",
                       inv.command->path, inv.command->synopsis, inv.command->path);
        else if (!inv.words.empty() && is_group(inv.words[0]))
            print_group_help(stderr, inv.words[0]);
        else
            fmt::print(stderr, "usage: relayguardctl [--config FILE] [--json] COMMAND [ARGUMENTS]\n"
                               "(relayguardctl --help lists the commands)\n");
        return exit_usage;
    }
    try {
        return run(inv);
    } catch (const std::exception& e) {
        // Startup edge (config load, allocation): the commands themselves do not throw.
        fmt::print(stderr, "relayguardctl: {}\n", e.what());
        return exit_failure;
    }
}
