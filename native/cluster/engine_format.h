// What the cluster link reads back from Redis, parsed (runtime/cluster_link.h): the messages the publish script
// sends to the nodes, and the fill script's answer. Pure functions over RESP values: Redis's answers are input
// like any other, so every field is checked and anything the scripts would not have written is refused.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "cluster/resp.h"

namespace starling::engine {

// Flags as the scripts keep them with each message: "t" or "b" (the publisher's frame type), then "r" if retained.
struct Flags {
  bool binary = false;
  bool retained = false;
};
bool parse_flags(std::string_view text, Flags* out);

// A message as the publish script sends it: "<epoch> <seq> <flags>\n<payload>" (epoch in base 36, seq decimal).
struct Message {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  Flags flags;
  std::string_view data;   // points into the payload given
};
bool parse_message(std::string_view payload, Message* out);

// One history entry of a fill: its number and its fields (views into the parser's buffer).
struct Entry {
  uint64_t seq = 0;
  Flags flags;
  std::string_view data;
};

// The fill script's answer: {epoch, last, snapshot seq | nil, snapshot flags | nil, snapshot payload | nil,
// entries} with entries as XRANGE (ascending) or XREVRANGE (descending: `descending`) gives them.
struct Fill {
  uint64_t epoch = 0;
  uint64_t last = 0;
  bool has_snapshot = false;
  Entry snapshot;
  // Ascending, consecutive, ending at `last`: the newest run of consecutive numbers that does (an entry that does
  // not follow the one before starts the run again; a run that does not end at last is dropped).
  std::vector<Entry> entries;
};
// False with a reason (for the log) when v is not such an answer.
bool parse_fill(const resp::Parser& p, const resp::Value& v, bool descending, Fill* out, const char** why);

// A decimal number given as a bulk/simple string or an integer reply.
bool parse_number(const resp::Value& v, uint64_t* out);

}  // namespace starling::engine
