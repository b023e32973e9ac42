// static_files.h — the consoles' pages, scripts and styles, served from a directory
// (build/share/postern/web/<console>/ beside the binaries, or a configured root): GET and HEAD
// only, a fixed set of file types, no directory listing, no dot files, no path that leaves the
// root (".." segments, encoded slashes, NUL, symlinks out of it), files up to 4 MiB, and on every
// answer the headers a console page needs (Content-Security-Policy 'self' only, no framing, no
// sniffing, no referrer, no caching of HTML).
// Security-sensitive: the path comes from anyone who can connect to a console listener.
#pragma once

#include <string>

#include "http/http_server.h"

namespace postern::http {

// The directory <exe>/../share/postern/web/<console> ("" when /proc/self/exe cannot be read).
std::string default_web_root(const std::string& console);

// The file for `url_path` under `root` ("/" = index.html). 404 for anything not servable, 405 for
// a method other than GET/HEAD. `url_path` is the request's path as sent (percent-encoded).
Response serve_static(const std::string& root, const Request& req);

// The headers every console answer carries (pages and API alike).
void add_console_headers(Response& r);

}  // namespace postern::http
