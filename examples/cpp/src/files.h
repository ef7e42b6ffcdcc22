// Whole-file reads and path helpers whose errors name the file.
#pragma once

#include <string>
#include <vector>

namespace iqart
{

std::string join_path(std::string const& directory, std::string const& name);
bool is_regular_file(std::string const& path);
std::string read_text_file(std::string const& path);            // Error naming `path` if unreadable
std::vector<char> read_binary_file(std::string const& path);    // Error naming `path` if unreadable
std::vector<std::string> files_with_suffix(std::string const& directory, std::string const& suffix); // sorted

} // namespace iqart
