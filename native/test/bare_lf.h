// What the HTTP fuzz targets check a head against: the parsers refuse a bare LF at once.
#pragma once
#include <cstddef>
#include <cstdint>

// True if data[0..n) has a '\n' not preceded by '\r': a parser must never wait on such a head.
inline bool has_bare_lf(const uint8_t* data, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) return true;
  return false;
}
