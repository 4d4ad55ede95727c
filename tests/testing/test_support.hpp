// SPDX-License-Identifier: MIT
// test_support.hpp - helpers shared by the tests: files, samples, temporary directories.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace relayguard::testing {

// read_file - the whole file; fails the current test (and returns "") if it cannot be read.
std::string read_file(const std::filesystem::path& path);

// write_file - create or replace a file with `content`.
void write_file(const std::filesystem::path& path, const std::string& content);

// samples_dir - tests/data/samples (captured Postfix 3.7 / Exim 4.96 requests).
std::filesystem::path samples_dir();

// sample_files - every *.policy file below samples_dir(), sorted.
std::vector<std::filesystem::path> sample_files();

// test_data_dir - tests/data.
std::filesystem::path test_data_dir();

// binary_dir - the CMake build directory (where the relayguard executable is).
std::filesystem::path binary_dir();

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

} // namespace relayguard::testing
