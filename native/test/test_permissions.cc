// Unit tests for permissions.cc: the wildcard rule, pattern refusals, merging, sharing, and a randomized
// comparison with the reference model (permission_model.h) over thousands of subject/permission pairs.
#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "io/memory.h"
#include "permission_model.h"
#include "pubsub/permissions.h"
#include "rng.h"

using namespace starling;

namespace {

Permissions* build(const std::vector<PermissionEntry>& entries) {
  std::string problem;
  Permissions* p = Permissions::build(entries, &problem);
  if (!p) std::fprintf(stderr, "build failed: %s\n", problem.c_str());
  CHECK(p != nullptr);
  return p;
}

}  // namespace

TEST(permissions_grant_exact_subjects_only_for_their_access) {
  Permissions* p = build({{kAccessSubscribe, "/a/b"}, {kAccessPublish, "/p"}, {kAccessAll, "/both"}});
  CHECK(p->allows(kAccessSubscribe, "/a/b"));
  CHECK(!p->allows(kAccessPublish, "/a/b"));
  CHECK(!p->allows(kAccessSubscribe, "/a"));
  CHECK(!p->allows(kAccessSubscribe, "/a/b/c"));
  CHECK(!p->allows(kAccessSubscribe, "/a/bc"));
  CHECK(p->allows(kAccessPublish, "/p"));
  CHECK(!p->allows(kAccessSubscribe, "/p"));
  CHECK(p->allows(kAccessSubscribe, "/both") && p->allows(kAccessPublish, "/both"));
  p->unref();
}

TEST(permissions_a_wildcard_segment_grants_it_and_everything_below) {
  Permissions* p = build({{kAccessSubscribe, "/a/*"}, {kAccessPublish, "/u/{user}"}, {kAccessAll, "/x/{id}"}});
  CHECK(p->allows(kAccessSubscribe, "/a/b"));
  CHECK(p->allows(kAccessSubscribe, "/a/b/c/d"));
  CHECK(!p->allows(kAccessSubscribe, "/a"));
  CHECK(!p->allows(kAccessSubscribe, "/ab/c"));
  CHECK(!p->allows(kAccessPublish, "/a/b"));
  CHECK(p->allows(kAccessPublish, "/u/ann/in"));
  CHECK(p->allows(kAccessPublish, "/u/ann/out"));
  CHECK(!p->allows(kAccessPublish, "/u"));
  CHECK(p->allows(kAccessSubscribe, "/x/1") && p->allows(kAccessPublish, "/x/1/2"));
  p->unref();
  Permissions* all = build({{kAccessSubscribe, "/*"}});
  CHECK(all->allows(kAccessSubscribe, "/anything"));
  CHECK(all->allows(kAccessSubscribe, "/a/b/c"));
  CHECK(!all->allows(kAccessPublish, "/anything"));
  all->unref();
}

TEST(permissions_merge_duplicate_keys_and_grant_nothing_when_empty) {
  Permissions* p = build({{kAccessSubscribe, "/a"}, {kAccessPublish, "/a"}, {kAccessSubscribe, "/a/*"}, {kAccessPublish, "/a/{x}"}});
  CHECK_EQ(p->keys(), 2u);
  CHECK(p->allows(kAccessPublish, "/a") && p->allows(kAccessSubscribe, "/a"));
  CHECK(p->allows(kAccessPublish, "/a/z") && p->allows(kAccessSubscribe, "/a/z"));
  p->unref();
  Permissions* braces = build({{kAccessSubscribe, "/a/{}"}});  // "{}" is a plain segment, not a wildcard
  CHECK(braces->allows(kAccessSubscribe, "/a/{}") && !braces->allows(kAccessSubscribe, "/a/b"));
  braces->unref();
  // A brace inside the name makes a plain segment too (the rule of src/entitlement/jwt.ts): "/x/{a{b}" grants
  // exactly that subject, and "/x/{a{b}/c" is a subject pattern, not a wildcard with segments after it.
  Permissions* nested = build({{kAccessSubscribe, "/x/{a{b}"}, {kAccessSubscribe, "/y/{a}b}/c"}});
  CHECK(nested->allows(kAccessSubscribe, "/x/{a{b}") && !nested->allows(kAccessSubscribe, "/x/zz/yy"));
  CHECK(nested->allows(kAccessSubscribe, "/y/{a}b}/c") && !nested->allows(kAccessSubscribe, "/y/q/c"));
  nested->unref();
  Permissions* none = build({});
  CHECK(!none->allows(kAccessSubscribe, "/a"));
  none->unref();
}

TEST(permissions_refuse_what_is_not_a_pattern_and_say_why) {
  for (const char* bad : {"", "a/b", "/", "//", "/a//b", "/a/", "/a*", "/a/b*", "/a/*b", "/a b", "/a/\x01", "/a/*/c", "/{x}/c", "//*"}) {
    std::string problem;
    Permissions* p = Permissions::build({{kAccessSubscribe, bad}}, &problem);
    if (p) std::fprintf(stderr, "accepted \"%s\"\n", bad);
    CHECK(p == nullptr);
    CHECK(!problem.empty());
    CHECK(problem.find('"') == 0);  // names the pattern
  }
  CHECK(Permissions::pattern_problem(std::string(256, 'a').insert(0, "/")).size() > 0);
}

TEST(permissions_are_shared_and_their_memory_is_accounted_and_given_back) {
  const int64_t before = starling::mem::total();
  Permissions* p = build({{kAccessAll, "/a/*"}, {kAccessSubscribe, "/b"}});
  CHECK(starling::mem::total() - before >= static_cast<int64_t>(p->bytes()));
  p->ref();
  p->unref();
  CHECK(p->allows(kAccessSubscribe, "/b"));  // still alive: one reference left
  p->unref();
  CHECK_EQ(starling::mem::total(), before);
}

// Thousands of random pattern sets and subjects over a small alphabet (so that they often meet), every
// decision compared with the model, for both accesses.
TEST(permissions_agree_with_the_reference_model_on_random_sets_and_subjects) {
  Rng rng(20261202);
  const char* names[] = {"a", "b", "c", "ab", "*", "{id}", "{x}"};  // the last three: wildcards
  const char* subject_names[] = {"a", "b", "c", "ab", "{id}", "d"};
  size_t decisions = 0, granted = 0;
  for (int round = 0; round < 400; round++) {
    std::vector<std::string> patterns;
    const size_t n = 1 + rng.below(12);
    for (size_t i = 0; i < n; i++) {
      std::string p;
      const size_t depth = 1 + rng.below(4);
      for (size_t d = 0; d < depth; d++) p += "/" + std::string(names[rng.below(d + 1 < depth ? 4 : 7)]);
      patterns.push_back(p);
    }
    std::vector<PermissionEntry> entries;
    for (const std::string& p : patterns) entries.push_back({static_cast<uint8_t>(1 + rng.below(3)), p});
    Permissions* set = build(entries);
    for (int k = 0; k < 50; k++) {
      std::string s;
      const size_t depth = 1 + rng.below(5);
      for (size_t d = 0; d < depth; d++) s += "/" + std::string(subject_names[rng.below(6)]);
      for (Access a : {kAccessSubscribe, kAccessPublish}) {
        const bool want = model::allows(entries, a, s);
        if (set->allows(a, s) != want) {
          std::fprintf(stderr, "round %d: %s %s: model says %d\n", round, a == kAccessSubscribe ? "sub" : "pub", s.c_str(), want);
          CHECK(false);
        }
        decisions++;
        granted += want;
      }
    }
    set->unref();
  }
  CHECK_EQ(decisions, 40000u);
  CHECK(granted > 4000 && granted < 36000);  // both answers are exercised
}
