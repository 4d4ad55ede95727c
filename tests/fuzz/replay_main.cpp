// SPDX-License-Identifier: MIT
// replay_main.cpp - run a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer.
//
// Usage: fuzz_replay_<target> PATH... where each PATH is an input file or a directory of them
// (not recursive). Linked with one fuzz_<target>.cpp, any compiler, so that the seed corpus and
// every crash input kept in tests/fuzz/regressions/ run in the ordinary unit test build. A failed
// property aborts, naming the input first; a run that finds no input at all fails too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// inputs_of - the files `path` names: itself, or the regular files directly in it, sorted so
// that runs are reproducible. False if it names neither.
bool inputs_of(const std::filesystem::path& path, std::vector<std::filesystem::path>& out)
{
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) {
        out.push_back(path);
        return true;
    }
    if (!std::filesystem::is_directory(path, ec)) return false;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(path, ec))
        if (entry.is_regular_file(ec)) files.push_back(entry.path());
    if (ec) return false;
    std::sort(files.begin(), files.end());
    out.insert(out.end(), files.begin(), files.end());
    return true;
}

bool read_file(const std::filesystem::path& path, std::string& out)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return !in.bad();
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n", argv[0]);
        return 2;
    }
    std::vector<std::filesystem::path> inputs;
    for (int i = 1; i < argc; ++i) {
        if (!inputs_of(argv[i], inputs)) {
            std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
            return 2;
        }
    }
    if (inputs.empty()) {
        std::fprintf(stderr, "no inputs found\n");
        return 1;
    }
    std::string data;
    for (const auto& path : inputs) {
        if (!read_file(path, data)) {
            std::fprintf(stderr, "%s: cannot read\n", path.c_str());
            return 2;
        }
        // Named before running it: a failed check aborts without returning here.
        std::fprintf(stderr, "replaying %s (%zu bytes)\n", path.c_str(), data.size());
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
    }
    std::fprintf(stderr, "replayed %zu inputs\n", inputs.size());
    return 0;
}
