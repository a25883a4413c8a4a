// Small file helpers shared by host and plugins.
#pragma once

#include <filesystem>
#include <string>

namespace st::sdk {

/// Writes `content` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. On failure the temporary file is removed, an existing `path` is left
/// untouched, and st::Error names the path and the system error.
void write_file_atomic(const std::filesystem::path& path, const std::string& content);

/// st::Error unless `path` is a regular file or a link to one. FIFOs, devices, sockets and folders
/// are refused before anything opens them (opening a FIFO waits for a writer forever; a device never
/// ends). `what` names what the file was meant to be ("a config file", "a video"): the message says
/// "'<path>' is a FIFO, expected <what> (a regular file)". A missing file: "cannot open '<path>': ...".
void require_regular_file(const std::filesystem::path& path, const std::string& what,
                          const std::string& component = "files");

/// Reads a whole regular file; st::Error naming the path if it cannot.
std::string read_file(const std::filesystem::path& path);

/// fsync of a directory (makes a rename inside it durable). Errors are ignored on filesystems that
/// do not support it.
void sync_directory(const std::filesystem::path& dir);

}  // namespace st::sdk
