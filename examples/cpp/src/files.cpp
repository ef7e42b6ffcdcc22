#include "files.h"

#include "iqart/spec.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace iqart
{

std::string join_path(std::string const& directory, std::string const& name)
{
    return (std::filesystem::path(directory) / name).string();
}

bool is_regular_file(std::string const& path)
{
    std::error_code error;
    return std::filesystem::is_regular_file(path, error);
}

std::vector<char> read_binary_file(std::string const& path)
{
    if (!is_regular_file(path))
        throw Error(path + ": no such file");
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw Error(path + ": cannot open for reading");
    std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad())
        throw Error(path + ": read error");
    return bytes;
}

std::string read_text_file(std::string const& path)
{
    std::vector<char> const bytes = read_binary_file(path);
    return {bytes.begin(), bytes.end()};
}

std::vector<std::string> files_with_suffix(std::string const& directory, std::string const& suffix)
{
    std::vector<std::string> found;
    std::error_code error;
    for (auto const& entry : std::filesystem::directory_iterator(directory, error))
    {
        std::string const name = entry.path().filename().string();
        if (entry.is_regular_file(error) && name.size() > suffix.size()
            && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
            found.push_back(entry.path().string());
    }
    std::sort(found.begin(), found.end());
    return found;
}

} // namespace iqart
