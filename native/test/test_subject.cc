// Unit tests for subject.cc: the two-sided subscriber/subject lists (link, unlink, Subscriber::find),
// the sharded Registry (acquire, release, find_ref, epochs, shard growth, reference counts), the epoch
// token and concurrent use of the registry from several workgroup threads.
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "check.h"
#include "rng.h"
#include "pubsub/subject.h"

using namespace starling;

namespace {

std::string name_of(size_t i) { return "/t/" + std::to_string(i); }

// A subscriber belongs to one workgroup, as a connection does.
struct Member {
  Subscriber sub;
  unsigned wg = 0;
};

// Checks that subscription k of `who` and the entry it names in the subject's list point at each other.
bool slot_consistent(const Subscriber& who, uint32_t k, unsigned wg) {
  const SubSlot& slot = who.subs[k];
  if (slot.subject == nullptr) return false;
  SubList& list = slot.subject->local(wg);
  if (slot.index >= list.size) return false;
  const SubRef& ref = list.items[slot.index];
  return ref.who == &who && ref.slot == k;
}

// Checks that entry i of subject->local(wg) and the subscription it names point at each other.
bool entry_consistent(Subject* subject, unsigned wg, uint32_t i) {
  const SubRef& ref = subject->local(wg).items[i];
  if (ref.who == nullptr || ref.slot >= ref.who->nsubs) return false;
  const SubSlot& slot = ref.who->subs[ref.slot];
  return slot.subject == subject && slot.index == i;
}

// Both directions for one subscriber, plus its capacity bookkeeping. Returns the number of problems.
size_t subscriber_problems(const Subscriber& who, unsigned wg) {
  size_t bad = 0;
  if (who.nsubs > who.capsubs) bad++;
  if ((who.capsubs == 1) != (who.subs == &who.one)) bad++;
  for (uint32_t k = 0; k < who.nsubs; k++)
    if (!slot_consistent(who, k, wg)) bad++;
  return bad;
}

size_t list_problems(Subject* subject, unsigned wg) {
  size_t bad = 0;
  SubList& list = subject->local(wg);
  if (list.size > list.cap) bad++;
  for (uint32_t i = 0; i < list.size; i++)
    if (!entry_consistent(subject, wg, i)) bad++;
  return bad;
}

}  // namespace

// ---- link / unlink ----

TEST(link_records_the_subscription_on_both_sides) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 1);
  Subscriber a;
  link(&a, x, 1);
  CHECK_EQ(a.nsubs, 1u);
  CHECK(a.subs[0].subject == x);
  CHECK_EQ(a.subs[0].index, 0u);
  CHECK_EQ(x->local(1).size, 1u);
  CHECK(x->local(1).items[0].who == &a);
  CHECK_EQ(x->local(1).items[0].slot, 0u);
  CHECK_EQ(x->local(0).size, 0u);  // the other workgroup's column is untouched
  CHECK(unlink(&a, 0, 1) == x);
  reg.release(x, 1);
}

TEST(unlinking_the_only_entry_empties_both_lists_and_returns_the_subject) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 0);
  Subscriber a;
  link(&a, x, 0);
  CHECK(unlink(&a, 0, 0) == x);
  CHECK_EQ(a.nsubs, 0u);
  CHECK_EQ(x->local(0).size, 0u);
  CHECK_EQ(a.find(x), -1);
  // The subscriber can subscribe again afterwards.
  link(&a, x, 0);
  CHECK_EQ(a.nsubs, 1u);
  CHECK_EQ(x->local(0).size, 1u);
  CHECK_EQ(subscriber_problems(a, 0), 0u);
  CHECK_EQ(list_problems(x, 0), 0u);
  unlink(&a, 0, 0);
  reg.release(x, 0);
}

TEST(unlinking_the_last_entry_of_both_lists_moves_nothing) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 0);
  Subject* y = reg.acquire("/y", 0);
  Subscriber a, b;
  link(&a, x, 0);  // x: [a]
  link(&b, x, 0);  // x: [a, b]
  link(&b, y, 0);  // b: [x, y]; y: [b]
  link(&a, y, 0);  // a: [x, y]; y: [b, a]
  // a's subscription to y is last in a's list and a is last in y's list.
  CHECK(unlink(&a, 1, 0) == y);
  CHECK_EQ(a.nsubs, 1u);
  CHECK(a.subs[0].subject == x);
  CHECK_EQ(y->local(0).size, 1u);
  CHECK(y->local(0).items[0].who == &b);
  CHECK_EQ(y->local(0).items[0].slot, 1u);
  for (Subscriber* s : {&a, &b}) CHECK_EQ(subscriber_problems(*s, 0), 0u);
  for (Subject* s : {x, y}) CHECK_EQ(list_problems(s, 0), 0u);
  while (a.nsubs) unlink(&a, 0, 0);
  while (b.nsubs) unlink(&b, 0, 0);
  reg.release(x, 0);
  reg.release(y, 0);
}

TEST(unlinking_a_subscription_last_in_its_own_list_but_not_in_the_subjects_repoints_the_moved_subscriber) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 0);
  Subject* y = reg.acquire("/y", 0);
  Subscriber a, b, c;
  link(&a, x, 0);
  link(&a, y, 0);  // a: [x, y]; y: [a]
  link(&c, y, 0);  // c: [y]; y: [a, c]
  link(&b, y, 0);  // b: [y]; y: [a, c, b]
  CHECK(unlink(&a, 1, 0) == y);  // last in a's list, first in y's list
  // b (last in y's list) moved into a's old place and its back index follows.
  CHECK_EQ(y->local(0).size, 2u);
  CHECK(y->local(0).items[0].who == &b);
  CHECK_EQ(y->local(0).items[0].slot, 0u);
  CHECK_EQ(b.subs[0].index, 0u);
  CHECK(y->local(0).items[1].who == &c);
  CHECK_EQ(c.subs[0].index, 1u);
  CHECK_EQ(a.nsubs, 1u);
  CHECK(a.subs[0].subject == x);
  CHECK_EQ(a.subs[0].index, 0u);
  for (Subscriber* s : {&a, &b, &c}) CHECK_EQ(subscriber_problems(*s, 0), 0u);
  for (Subject* s : {x, y}) CHECK_EQ(list_problems(s, 0), 0u);
  for (Subscriber* s : {&a, &b, &c})
    while (s->nsubs) unlink(s, 0, 0);
  reg.release(x, 0);
  reg.release(y, 0);
}

TEST(unlinking_a_subscription_last_in_the_subjects_list_but_not_in_its_own_repoints_the_moved_subscription) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 1);
  Subject* y = reg.acquire("/y", 1);
  Subject* z = reg.acquire("/z", 1);
  Subscriber a, b;
  link(&b, x, 1);  // x: [b]
  link(&a, x, 1);  // a: [x]; x: [b, a]
  link(&a, y, 1);  // a: [x, y]
  link(&b, z, 1);  // z: [b]
  link(&a, z, 1);  // a: [x, y, z]; z: [b, a]
  CHECK(unlink(&a, 0, 1) == x);  // a is last in x's list, x is first in a's list
  CHECK_EQ(x->local(1).size, 1u);
  CHECK(x->local(1).items[0].who == &b);
  // a's last subscription (z) moved into slot 0; z's entry for a follows.
  CHECK_EQ(a.nsubs, 2u);
  CHECK(a.subs[0].subject == z);
  CHECK_EQ(a.subs[0].index, 1u);
  CHECK(z->local(1).items[1].who == &a);
  CHECK_EQ(z->local(1).items[1].slot, 0u);
  CHECK(a.subs[1].subject == y);
  CHECK_EQ(y->local(1).items[0].slot, 1u);
  for (Subscriber* s : {&a, &b}) CHECK_EQ(subscriber_problems(*s, 1), 0u);
  for (Subject* s : {x, y, z}) CHECK_EQ(list_problems(s, 1), 0u);
  for (Subscriber* s : {&a, &b})
    while (s->nsubs) unlink(s, s->nsubs - 1, 1);
  for (Subject* s : {x, y, z}) reg.release(s, 1);
}

TEST(unlinking_from_the_middle_of_both_lists_repoints_both_moved_entries) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 0);
  Subject* y = reg.acquire("/y", 0);
  Subscriber a, b;
  link(&a, x, 0);  // a: [x]; x: [a]
  link(&b, x, 0);  // b: [x]; x: [a, b]
  link(&a, y, 0);  // a: [x, y]; y: [a]
  CHECK(unlink(&a, 0, 0) == x);
  CHECK(x->local(0).items[0].who == &b);
  CHECK_EQ(b.subs[0].index, 0u);
  CHECK(a.subs[0].subject == y);
  CHECK_EQ(y->local(0).items[0].slot, 0u);
  for (Subscriber* s : {&a, &b}) CHECK_EQ(subscriber_problems(*s, 0), 0u);
  for (Subject* s : {x, y}) CHECK_EQ(list_problems(s, 0), 0u);
  unlink(&a, 0, 0);
  unlink(&b, 0, 0);
  reg.release(x, 0);
  reg.release(y, 0);
}

TEST(first_subscription_lives_inline_and_later_ones_grow_out_of_it) {
  Registry reg(1, 1);
  std::vector<Subject*> subjects;
  for (size_t i = 0; i < 10; i++) subjects.push_back(reg.acquire(name_of(i), 0));
  Subscriber a;
  CHECK(a.subs == &a.one);
  CHECK_EQ(a.capsubs, 1u);
  link(&a, subjects[0], 0);
  CHECK(a.subs == &a.one);  // no allocation for the first subscription
  CHECK_EQ(a.capsubs, 1u);
  link(&a, subjects[1], 0);
  CHECK(a.subs != &a.one);  // the inline slot was copied out
  CHECK_EQ(a.capsubs, 4u);
  CHECK(a.subs[0].subject == subjects[0]);
  CHECK(a.subs[1].subject == subjects[1]);
  CHECK_EQ(subscriber_problems(a, 0), 0u);
  for (size_t i = 2; i < 10; i++) {
    link(&a, subjects[i], 0);
    CHECK_EQ(subscriber_problems(a, 0), 0u);
  }
  CHECK_EQ(a.nsubs, 10u);
  CHECK_EQ(a.capsubs, 16u);  // 4 -> 8 -> 16
  for (size_t i = 0; i < 10; i++) {
    CHECK_EQ(a.find(subjects[i]), static_cast<int>(i));
    CHECK_EQ(list_problems(subjects[i], 0), 0u);
  }
  // Unlinking everything keeps the heap list (it never shrinks); the destructor frees it (leak check).
  while (a.nsubs) {
    unlink(&a, 0, 0);
    CHECK_EQ(subscriber_problems(a, 0), 0u);
  }
  CHECK_EQ(a.capsubs, 16u);
  for (Subject* s : subjects) reg.release(s, 0);
}

TEST(subject_list_grows_by_doubling_and_keeps_its_entries) {
  Registry reg(2, 1);
  Subject* x = reg.acquire("/x", 1);
  std::unique_ptr<Subscriber[]> subs(new Subscriber[20]);
  for (size_t i = 0; i < 20; i++) {
    link(&subs[i], x, 1);
    CHECK_EQ(x->local(1).size, i + 1);
  }
  CHECK_EQ(x->local(1).cap, 32u);  // 1 -> 2 -> 4 -> 8 -> 16 -> 32
  CHECK_EQ(list_problems(x, 1), 0u);
  for (size_t i = 0; i < 20; i++) {
    CHECK(x->local(1).items[i].who == &subs[i]);
    CHECK_EQ(subscriber_problems(subs[i], 1), 0u);
  }
  for (size_t i = 0; i < 20; i++) unlink(&subs[i], 0, 1);
  CHECK_EQ(x->local(1).size, 0u);
  CHECK_EQ(x->local(1).cap, 32u);
  reg.release(x, 1);  // frees the list with the subject (leak check)
}

// A random walk of SUB/UNSUB over 50 subscribers (two workgroups) and 30 subject names, following the
// workgroup's protocol (acquire before linking, release when a local list empties). After every step
// both sides of every list must agree with each other and with a std::set model, and the registry must
// hold exactly the names somebody subscribes to.
TEST(random_links_and_unlinks_keep_both_sides_consistent_with_a_model) {
  constexpr size_t kSubscribers = 50, kNames = 30, kSteps = 4000;
  constexpr unsigned kWorkgroups = 2;
  for (uint64_t seed : {1u, 2u, 3u}) {
    Rng rng(seed);
    Registry reg(kWorkgroups, 1);
    std::unique_ptr<Member[]> members(new Member[kSubscribers]);
    for (size_t i = 0; i < kSubscribers; i++) members[i].wg = static_cast<unsigned>(i % kWorkgroups);
    Subject* held[kWorkgroups][kNames] = {};   // the subject wg acquired for a name, while it holds it
    std::set<std::pair<size_t, size_t>> model;  // (subscriber, name)
    size_t problems = 0, model_mismatches = 0, registry_mismatches = 0;

    std::vector<std::string> names;
    for (size_t n = 0; n < kNames; n++) names.push_back(name_of(n));
    std::map<const Subscriber*, size_t> index_of;
    for (size_t i = 0; i < kSubscribers; i++) index_of[&members[i].sub] = i;

    for (size_t step = 0; step < kSteps; step++) {
      const size_t s = rng.below(kSubscribers);
      Member& m = members[s];
      const unsigned wg = m.wg;
      const bool by_index = m.sub.nsubs > 0 && rng.below(4) == 0;
      size_t j = rng.below(kNames);
      if (by_index) {
        // UNSUB of a random existing subscription, chosen by its position in the subscriber's list.
        const uint32_t k = static_cast<uint32_t>(rng.below(m.sub.nsubs));
        Subject* subject = m.sub.subs[k].subject;
        j = std::stoul(std::string(subject->name().substr(3)));
        Subject* gone = unlink(&m.sub, k, wg);
        if (gone != subject) problems++;
        model.erase({s, j});
        if (gone->local(wg).size == 0) {
          reg.release(gone, wg);
          held[wg][j] = nullptr;
        }
      } else if (model.count({s, j})) {
        Subject* subject = held[wg][j];
        const int k = m.sub.find(subject);
        if (k < 0) {
          problems++;
          continue;
        }
        Subject* gone = unlink(&m.sub, static_cast<uint32_t>(k), wg);
        if (gone != subject) problems++;
        model.erase({s, j});
        if (gone->local(wg).size == 0) {
          reg.release(gone, wg);
          held[wg][j] = nullptr;
        }
      } else {
        Subject* subject = reg.acquire(names[j], wg);
        if (held[wg][j] != nullptr && held[wg][j] != subject) problems++;
        if (held[1 - wg][j] != nullptr && held[1 - wg][j] != subject) problems++;  // one Subject per name
        if (m.sub.find(subject) != -1) problems++;
        held[wg][j] = subject;
        link(&m.sub, subject, wg);
        model.insert({s, j});
      }

      // The model, per subscriber and per (workgroup, name).
      std::vector<std::set<size_t>> names_of(kSubscribers);
      size_t local_count[kWorkgroups][kNames] = {};
      for (const auto& [who, n] : model) {
        names_of[who].insert(n);
        local_count[members[who].wg][n]++;
      }

      // Both directions of every list.
      for (size_t i = 0; i < kSubscribers; i++) problems += subscriber_problems(members[i].sub, members[i].wg);
      for (unsigned w = 0; w < kWorkgroups; w++)
        for (size_t n = 0; n < kNames; n++) {
          if (held[w][n] == nullptr) {
            if (local_count[w][n] != 0) model_mismatches++;
            continue;
          }
          problems += list_problems(held[w][n], w);
          // Every entry of wg w's list is a subscriber of workgroup w subscribed to that name.
          SubList& list = held[w][n]->local(w);
          for (uint32_t e = 0; e < list.size; e++) {
            auto it = index_of.find(list.items[e].who);
            if (it == index_of.end() || members[it->second].wg != w || !names_of[it->second].count(n))
              model_mismatches++;
          }
          if (held[w][n]->local(w).size != local_count[w][n]) model_mismatches++;
        }
      // Every subscriber's list equals the model.
      for (size_t i = 0; i < kSubscribers; i++) {
        const Subscriber& who = members[i].sub;
        if (who.nsubs != names_of[i].size()) model_mismatches++;
        for (size_t n : names_of[i])
          if (held[members[i].wg][n] == nullptr || who.find(held[members[i].wg][n]) < 0) model_mismatches++;
      }
      // The registry holds a name exactly while some workgroup has a local subscriber.
      size_t live = 0;
      for (size_t n = 0; n < kNames; n++) {
        const bool wanted = held[0][n] != nullptr || held[1][n] != nullptr;
        live += wanted;
        const uint64_t want_interest = (held[0][n] ? 1u : 0u) | (held[1][n] ? 2u : 0u);
        if (wanted) {
          Subject* any = held[0][n] ? held[0][n] : held[1][n];
          if (any->interest.load() != want_interest) registry_mismatches++;
        }
        Subject* found = reg.find_ref(names[n]);
        if ((found != nullptr) != wanted) registry_mismatches++;
        if (found) {
          if (found != (held[0][n] ? held[0][n] : held[1][n])) registry_mismatches++;
          found->unref();
        }
      }
      if (reg.size() != live) registry_mismatches++;
    }
    CHECK_EQ(problems, 0u);
    CHECK_EQ(model_mismatches, 0u);
    CHECK_EQ(registry_mismatches, 0u);
    CHECK(!model.empty());  // the walk reached a non-trivial state

    // Unsubscribe everything; every subject is released and the registry ends empty.
    for (size_t i = 0; i < kSubscribers; i++) {
      Member& m = members[i];
      while (m.sub.nsubs) {
        Subject* gone = unlink(&m.sub, m.sub.nsubs - 1, m.wg);
        if (gone->local(m.wg).size == 0) reg.release(gone, m.wg);
      }
    }
    CHECK_EQ(reg.size(), 0u);
  }
}

// ---- Subscriber::find ----

TEST(find_returns_the_index_of_a_subscription_or_minus_one) {
  Registry reg(1, 1);
  Subject* x = reg.acquire("/x", 0);
  Subject* y = reg.acquire("/y", 0);
  Subject* z = reg.acquire("/z", 0);
  Subscriber a;
  CHECK_EQ(a.find(x), -1);  // empty, and the inline slot's null subject does not match
  CHECK_EQ(a.find(nullptr), -1);
  link(&a, x, 0);
  link(&a, y, 0);
  link(&a, z, 0);
  CHECK_EQ(a.find(x), 0);
  CHECK_EQ(a.find(y), 1);
  CHECK_EQ(a.find(z), 2);
  unlink(&a, 0, 0);  // z moves into slot 0
  CHECK_EQ(a.find(x), -1);
  CHECK_EQ(a.find(z), 0);
  CHECK_EQ(a.find(y), 1);
  // Stale entries beyond nsubs are not matched.
  unlink(&a, 1, 0);
  CHECK_EQ(a.find(y), -1);
  CHECK_EQ(a.find(z), 0);
  unlink(&a, 0, 0);
  for (Subject* s : {x, y, z}) reg.release(s, 0);
}

// ---- Registry ----

TEST(acquire_creates_a_subject_once_per_name_and_sets_the_workgroups_interest_bit) {
  Registry reg(4, 100);
  CHECK_EQ(reg.size(), 0u);
  Subject* a = reg.acquire("/a/b", 2);
  CHECK(a != nullptr);
  CHECK_EQ(a->name(), "/a/b");
  CHECK_EQ(a->interest.load(), 4u);
  CHECK_EQ(a->refs.load(), 1u);  // the registry's reference only
  CHECK_EQ(a->seq, 0u);
  CHECK_EQ(a->epoch, 100u);
  CHECK_EQ(a->nworkgroups, 4u);
  CHECK_EQ(a->hash, static_cast<uint32_t>(hash_subject("/a/b")));
  for (unsigned w = 0; w < 4; w++) CHECK_EQ(a->local(w).size, 0u);
  CHECK_EQ(reg.size(), 1u);
  CHECK(reg.acquire("/a/b", 2) == a);
  CHECK(reg.acquire("/a/b", 0) == a);
  CHECK_EQ(a->interest.load(), 5u);
  CHECK_EQ(a->refs.load(), 1u);  // acquire adds no reference
  CHECK_EQ(reg.size(), 1u);
  Subject* b = reg.acquire("/a/c", 2);
  CHECK(b != a);
  CHECK_EQ(b->name(), "/a/c");
  CHECK_EQ(b->epoch, 101u);
  CHECK_EQ(reg.size(), 2u);
  // Names that differ only in length or by a prefix are different subjects.
  Subject* c = reg.acquire("/a/bb", 1);
  CHECK(c != a && c != b);
  CHECK_EQ(c->name(), "/a/bb");
  CHECK_EQ(reg.size(), 3u);
  reg.release(a, 2);
  reg.release(a, 0);
  reg.release(b, 2);
  reg.release(c, 1);
  CHECK_EQ(reg.size(), 0u);
}

TEST(acquire_handles_the_highest_workgroup_bit) {
  Registry reg(64, 1);
  Subject* s = reg.acquire("/wide", 63);
  CHECK_EQ(s->interest.load(), uint64_t{1} << 63);
  CHECK(s->home < 64);
  CHECK(reg.acquire("/wide", 0) == s);
  CHECK_EQ(s->interest.load(), (uint64_t{1} << 63) | 1u);
  reg.release(s, 63);
  CHECK_EQ(reg.size(), 1u);
  CHECK_EQ(s->interest.load(), 1u);
  reg.release(s, 0);
  CHECK_EQ(reg.size(), 0u);
}

TEST(find_ref_returns_null_for_unknown_names_and_a_referenced_subject_otherwise) {
  Registry reg(2, 1);
  CHECK(reg.find_ref("/nobody") == nullptr);
  Subject* s = reg.acquire("/somebody", 0);
  CHECK(reg.find_ref("/nobody") == nullptr);
  CHECK(reg.find_ref("/somebod") == nullptr);
  CHECK(reg.find_ref("/somebodyy") == nullptr);
  CHECK_EQ(s->refs.load(), 1u);
  Subject* r1 = reg.find_ref("/somebody");
  CHECK(r1 == s);
  CHECK_EQ(s->refs.load(), 2u);
  Subject* r2 = reg.find_ref("/somebody");
  CHECK(r2 == s);
  CHECK_EQ(s->refs.load(), 3u);
  r1->unref();
  CHECK_EQ(s->refs.load(), 2u);
  r2->unref();
  CHECK_EQ(s->refs.load(), 1u);
  reg.release(s, 0);
  CHECK(reg.find_ref("/somebody") == nullptr);
}

TEST(releasing_the_last_interested_workgroup_unregisters_but_a_held_reference_keeps_the_subject_alive) {
  Registry reg(2, 1);
  Subject* s = reg.acquire("/kept/alive", 1);
  Subject* other = reg.acquire("/other", 1);
  CHECK_EQ(reg.size(), 2u);
  Subject* held = reg.find_ref("/kept/alive");
  CHECK(held == s);
  reg.release(s, 1);
  CHECK_EQ(reg.size(), 1u);
  CHECK(reg.find_ref("/kept/alive") == nullptr);
  // Still readable through the reference (ASan would report a use after free otherwise).
  CHECK_EQ(held->refs.load(), 1u);
  CHECK_EQ(held->interest.load(), 0u);
  CHECK_EQ(held->name(), "/kept/alive");
  held->unref();  // frees it (leak check covers the other direction)
  // The other subject was not disturbed by the erase.
  Subject* o = reg.find_ref("/other");
  CHECK(o == other);
  if (o) o->unref();
  reg.release(other, 1);
  CHECK_EQ(reg.size(), 0u);
}

TEST(release_with_another_workgroup_still_interested_keeps_the_subject_registered) {
  Registry reg(3, 1);
  Subject* s = reg.acquire("/shared", 0);
  reg.acquire("/shared", 2);
  reg.release(s, 0);
  CHECK_EQ(reg.size(), 1u);
  CHECK_EQ(s->interest.load(), 4u);
  CHECK_EQ(s->refs.load(), 1u);
  Subject* r = reg.find_ref("/shared");
  CHECK(r == s);
  if (r) r->unref();
  // Releasing the same workgroup again changes nothing while another one is interested.
  reg.acquire("/shared", 0);
  reg.release(s, 0);
  CHECK_EQ(s->interest.load(), 4u);
  CHECK_EQ(reg.size(), 1u);
  reg.release(s, 2);
  CHECK_EQ(reg.size(), 0u);
  CHECK(reg.find_ref("/shared") == nullptr);
}

TEST(reacquiring_a_released_name_creates_a_new_subject_with_a_new_epoch_and_seq_zero) {
  Registry reg(2, 7);
  Subject* first = reg.acquire("/again", 0);
  first->seq = 42;  // as if the home had sequenced messages
  const uint64_t first_epoch = first->epoch;
  Subject* old = reg.find_ref("/again");  // keep the old one alive so the addresses cannot coincide
  reg.release(first, 0);
  CHECK(reg.find_ref("/again") == nullptr);
  reg.acquire("/unrelated", 1);  // epochs are process-wide: another subject in between
  Subject* second = reg.acquire("/again", 1);
  CHECK(second != old);
  CHECK_EQ(second->seq, 0u);
  CHECK(second->epoch > first_epoch);
  CHECK(second->epoch != first_epoch);
  CHECK_EQ(second->interest.load(), 2u);
  CHECK_EQ(second->name(), "/again");
  CHECK_EQ(old->seq, 42u);
  Subject* found = reg.find_ref("/again");
  CHECK(found == second);
  if (found) found->unref();
  old->unref();
  reg.release(second, 1);
  reg.release(reg.acquire("/unrelated", 1), 1);
  CHECK_EQ(reg.size(), 0u);
}

TEST(home_is_the_workgroup_that_created_the_subject) {
  Registry reg(8, 1);
  for (size_t i = 0; i < 500; i++) {
    const std::string name = name_of(i);
    const unsigned creator = static_cast<unsigned>(i % 8);
    Subject* s = reg.acquire(name, creator);
    CHECK_EQ(s->home, creator);
    // Later interest from other workgroups does not move the home while the subject lives.
    Subject* same = reg.acquire(name, (creator + 1) % 8);
    CHECK(same == s);
    CHECK_EQ(same->home, creator);
    reg.release(s, creator);
    reg.release(s, (creator + 1) % 8);
    // A later incarnation takes the home of whoever creates it.
    Subject* again = reg.acquire(name, (creator + 3) % 8);
    CHECK_EQ(again->home, (creator + 3) % 8);
    reg.release(again, (creator + 3) % 8);
  }
  CHECK_EQ(reg.size(), 0u);
}

TEST(many_subjects_grow_the_shards_stay_findable_and_release_to_empty) {
  constexpr size_t kCount = 100000;
  auto reg = std::make_unique<Registry>(4, 1);
  std::vector<Subject*> subjects(kCount);
  size_t wrong = 0;
  for (size_t i = 0; i < kCount; i++) {
    subjects[i] = reg->acquire(name_of(i), static_cast<unsigned>(i % 4));
    if (subjects[i] == nullptr || subjects[i]->name() != name_of(i)) wrong++;
  }
  CHECK_EQ(wrong, 0u);
  CHECK_EQ(reg->size(), kCount);
  size_t missing = 0, epochs_out_of_order = 0;
  for (size_t i = 0; i < kCount; i++) {
    Subject* s = reg->find_ref(name_of(i));
    if (s != subjects[i]) missing++;
    if (s) s->unref();
    if (i > 0 && subjects[i]->epoch <= subjects[i - 1]->epoch) epochs_out_of_order++;
    if (reg->acquire(name_of(i), static_cast<unsigned>(i % 4)) != subjects[i]) missing++;
  }
  CHECK_EQ(missing, 0u);
  CHECK_EQ(epochs_out_of_order, 0u);
  CHECK(reg->find_ref("/t/100000") == nullptr);
  // Release every other one first (deletion in the middle of probe chains), check the rest.
  for (size_t i = 0; i < kCount; i += 2) reg->release(subjects[i], static_cast<unsigned>(i % 4));
  CHECK_EQ(reg->size(), kCount / 2);
  size_t still_there = 0, lost = 0;
  for (size_t i = 0; i < kCount; i++) {
    Subject* s = reg->find_ref(name_of(i));
    if (i % 2 == 0 && s) still_there++;
    if (i % 2 == 1 && s != subjects[i]) lost++;
    if (s) s->unref();
  }
  CHECK_EQ(still_there, 0u);
  CHECK_EQ(lost, 0u);
  for (size_t i = 1; i < kCount; i += 2) reg->release(subjects[i], static_cast<unsigned>(i % 4));
  CHECK_EQ(reg->size(), 0u);
  for (size_t i = 0; i < kCount; i += 997) CHECK(reg->find_ref(name_of(i)) == nullptr);
  reg.reset();  // nothing left to free; ASan's leak check at exit proves it
}

TEST(destroying_the_registry_frees_the_subjects_still_registered) {
  auto reg = std::make_unique<Registry>(2, 1);
  std::unique_ptr<Subscriber[]> subs(new Subscriber[3]);
  for (size_t i = 0; i < 200; i++) {
    Subject* s = reg->acquire(name_of(i), 1);
    link(&subs[i % 3], s, 1);  // gives the subject a heap list too
  }
  CHECK_EQ(reg->size(), 200u);
  reg.reset();  // the leak check at exit fails if any subject or list is not freed
}

// ---- format_epoch ----

TEST(format_epoch_writes_base_36) {
  auto fmt = [](uint64_t e) {
    char out[16];
    std::memset(out, '#', sizeof out);
    const size_t n = format_epoch(e, out);
    return std::string(out, n);
  };
  CHECK_EQ(fmt(0), "0");
  CHECK_EQ(fmt(9), "9");
  CHECK_EQ(fmt(10), "a");
  CHECK_EQ(fmt(35), "z");
  CHECK_EQ(fmt(36), "10");
  CHECK_EQ(fmt(36 * 36 - 1), "zz");
  CHECK_EQ(fmt(36 * 36), "100");
  CHECK_EQ(fmt(1295 * 36 + 17), "zzh");
  CHECK_EQ(fmt(UINT64_MAX), "3w5e11264sgsf");  // 13 characters: the documented maximum
  // The output is exactly the returned length: nothing written past it.
  char out[16];
  std::memset(out, '#', sizeof out);
  CHECK_EQ(format_epoch(36, out), 2u);
  CHECK_EQ(out[2], '#');
  // Round trip over a range of values.
  Rng rng(9);
  size_t bad = 0;
  for (int i = 0; i < 10000; i++) {
    const uint64_t v = rng.next() >> rng.below(64);
    if (std::stoull(fmt(v), nullptr, 36) != v) bad++;
  }
  CHECK_EQ(bad, 0u);
}

// ---- concurrency ----

// Four workgroup threads acquire, look up and release names from a small shared pool at random for half a
// second, each as its own workgroup index and each linking a subscriber of its own into its column. The
// threads count problems themselves (the check harness is single-threaded); afterwards the registry must
// hold exactly the names still acquired, with the matching interest bits.
TEST(concurrent_acquire_find_release_from_four_workgroups_keeps_the_registry_consistent) {
  constexpr unsigned kThreads = 4;
  constexpr size_t kPool = 12;
  Registry reg(kThreads, 1);
  std::vector<std::string> names;
  for (size_t i = 0; i < kPool; i++) names.push_back("/pool/" + std::to_string(i));

  struct PerThread {
    Subject* held[kPool] = {};
    Subscriber sub;
    size_t ops = 0, problems = 0;
  };
  std::unique_ptr<PerThread[]> per(new PerThread[kThreads]);
  std::atomic<bool> go{false}, stop{false};

  auto worker = [&](unsigned wg) {
    PerThread& me = per[wg];
    Rng rng(1000 + wg);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    while (!stop.load(std::memory_order_relaxed)) {
      const size_t j = rng.below(kPool);
      const std::string& name = names[j];
      switch (rng.below(3)) {
        case 0: {  // SUB: first local subscriber acquires, then links
          if (me.held[j]) break;
          Subject* s = reg.acquire(name, wg);
          if (s == nullptr || s->name() != name) { me.problems++; break; }
          if (!(s->interest.load(std::memory_order_acquire) & (uint64_t{1} << wg))) me.problems++;
          if (s->home >= 64) me.problems++;
          link(&me.sub, s, wg);
          me.held[j] = s;
          break;
        }
        case 1: {  // PUB: look up with a reference, read it, drop it
          Subject* s = reg.find_ref(name);
          if (me.held[j] && s != me.held[j]) me.problems++;  // ours is registered while our bit is set
          if (s) {
            if (s->name() != name || s->refs.load() == 0) me.problems++;
            s->unref();
          }
          break;
        }
        default: {  // UNSUB: unlink, release when the local list empties
          Subject* s = me.held[j];
          if (!s) break;
          const int k = me.sub.find(s);
          if (k < 0) { me.problems++; break; }
          Subject* gone = unlink(&me.sub, static_cast<uint32_t>(k), wg);
          if (gone != s || gone->local(wg).size != 0) me.problems++;
          reg.release(gone, wg);
          me.held[j] = nullptr;
          break;
        }
      }
      me.ops++;
    }
  };

  std::vector<std::thread> threads;
  for (unsigned w = 0; w < kThreads; w++) threads.emplace_back(worker, w);
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop.store(true);
  for (std::thread& t : threads) t.join();

  size_t ops = 0;
  for (unsigned w = 0; w < kThreads; w++) {
    CHECK_EQ(per[w].problems, 0u);
    CHECK(per[w].ops > 100);
    ops += per[w].ops;
  }
  std::printf("  concurrent registry test: %zu operations\n", ops);

  // What is still acquired is exactly what is registered, with one Subject per name.
  size_t live = 0;
  for (size_t j = 0; j < kPool; j++) {
    uint64_t want_interest = 0;
    Subject* any = nullptr;
    bool same = true;
    for (unsigned w = 0; w < kThreads; w++) {
      Subject* s = per[w].held[j];
      if (!s) continue;
      want_interest |= uint64_t{1} << w;
      if (any && s != any) same = false;
      any = s;
    }
    CHECK(same);
    Subject* found = reg.find_ref(names[j]);
    CHECK(found == any);
    if (found) {
      CHECK_EQ(found->interest.load(), want_interest);
      CHECK_EQ(found->refs.load(), 2u);  // registry + ours: every thread's reference was dropped
      found->unref();
    }
    live += any != nullptr;
  }
  CHECK_EQ(reg.size(), live);
  for (unsigned w = 0; w < kThreads; w++) {
    CHECK_EQ(subscriber_problems(per[w].sub, w), 0u);
    for (size_t j = 0; j < kPool; j++) {
      if (!per[w].held[j]) continue;
      CHECK_EQ(per[w].held[j]->local(w).size, 1u);
      unlink(&per[w].sub, static_cast<uint32_t>(per[w].sub.find(per[w].held[j])), w);
      reg.release(per[w].held[j], w);
      per[w].held[j] = nullptr;
    }
  }
  CHECK_EQ(reg.size(), 0u);
}
