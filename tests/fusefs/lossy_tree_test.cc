// Unit tests of lossy_tree, the model behind lossyfs, without FUSE: they run where /dev/fuse
// is missing and reach corners a mounted test cannot steer (durable cycles, reference counts,
// the copy-on-write chunks against a plain string under a seeded random walk).
#include "lossy_tree.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>

#include <random>
#include <string>

namespace ringmta::lossyfs {
namespace {

constexpr identity root_user{0, 0};

std::string contents(const file_contents& data) {
  std::string out(data.size(), '\0');
  EXPECT_EQ(data.read(0, out.size(), out.data()), out.size());
  return out;
}

std::string contents(lossy_tree& tree, const node_ref& file) {
  std::string out(file->data.size(), '\0');
  EXPECT_EQ(tree.read(*file, 0, out.size(), out.data()), static_cast<long>(out.size()));
  return out;
}

node_ref make_file(lossy_tree& tree, std::uint64_t parent, const char* name) {
  node_ref out;
  EXPECT_EQ(tree.make_file(parent, name, 0644, root_user, out), 0);
  return out;
}

node_ref make_dir(lossy_tree& tree, std::uint64_t parent, const char* name) {
  node_ref out;
  EXPECT_EQ(tree.make_directory(parent, name, 0755, root_user, out), 0);
  return out;
}

node_ref lookup(lossy_tree& tree, std::uint64_t parent, const char* name) {
  node_ref out;
  return tree.lookup(parent, name, out) == 0 ? out : nullptr;
}

void write(lossy_tree& tree, const node_ref& file, std::uint64_t offset, const std::string& data) {
  EXPECT_EQ(tree.write(*file, offset, data.data(), data.size(), false),
            static_cast<long>(data.size()));
}

// Seeded: a failure replays exactly. The durable copy must never change when the current
// one does (copy-on-write), and both must always equal a plain string.
TEST(file_contents, random_walk_matches_a_string_and_snapshots_stay_frozen) {
  std::mt19937_64 random(20240611);
  file_contents current;
  file_contents durable;
  std::string current_expected;
  std::string durable_expected;
  constexpr std::uint64_t span_max = 5 * file_contents::chunk_bytes;
  for (int step = 0; step < 20000; ++step) {
    const std::uint64_t offset = random() % span_max;
    const std::uint64_t length = random() % (2 * file_contents::chunk_bytes);
    switch (random() % 6) {
      case 0:
      case 1: {
        if (length == 0) break;  // writes nothing, not even a hole
        const std::string data(length, static_cast<char>('a' + step % 26));
        current.write(offset, data.data(), data.size());
        if (current_expected.size() < offset + length) {
          current_expected.resize(offset + length, '\0');
        }
        current_expected.replace(offset, length, data);
        break;
      }
      case 2:
        current.resize(offset);
        current_expected.resize(offset, '\0');
        break;
      case 3:
        current.zero_range(offset, length);
        if (offset < current_expected.size()) {
          const std::uint64_t count = std::min(length, current_expected.size() - offset);
          current_expected.replace(offset, count, std::string(count, '\0'));
        }
        break;
      case 4:
        durable = current;
        durable_expected = current_expected;
        break;
      default:
        current = durable;
        current_expected = durable_expected;
        break;
    }
    ASSERT_EQ(current.size(), current_expected.size()) << "step " << step;
    if (step % 50 == 0) {
      ASSERT_EQ(contents(current), current_expected) << "step " << step;
      ASSERT_EQ(contents(durable), durable_expected) << "step " << step;
    }
  }
  EXPECT_EQ(contents(current), current_expected);
  EXPECT_EQ(contents(durable), durable_expected);
}

TEST(lossy_tree, strict_names_need_fsync_of_the_directory) {
  lossy_tree tree({});
  node_ref synced_name = make_file(tree, root_ino, "a");
  write(tree, synced_name, 0, "data a");
  tree.sync_file(*synced_name, false);
  tree.sync_directory(*tree.find(root_ino));
  node_ref no_name = make_file(tree, root_ino, "b");
  write(tree, no_name, 0, "data b");
  tree.sync_file(*no_name, true);
  tree.crash();
  EXPECT_EQ(tree.epoch(), 1u);
  ASSERT_NE(lookup(tree, root_ino, "a"), nullptr);
  EXPECT_EQ(contents(tree, lookup(tree, root_ino, "a")), "data a");
  EXPECT_EQ(lookup(tree, root_ino, "b"), nullptr);
  EXPECT_TRUE(no_name->dead);
}

TEST(lossy_tree, file_mode_fsync_commits_the_name_and_new_ancestors) {
  lossy_tree tree({.dirs = dir_durability::file});
  node_ref outer = make_dir(tree, root_ino, "outer");
  node_ref inner = make_dir(tree, outer->ino, "inner");
  node_ref file = make_file(tree, inner->ino, "f");
  node_ref unsynced = make_file(tree, inner->ino, "g");
  write(tree, file, 0, "kept");
  tree.sync_file(*file, true);
  tree.crash();
  const node_ref found_outer = lookup(tree, root_ino, "outer");
  ASSERT_NE(found_outer, nullptr);
  const node_ref found_inner = lookup(tree, found_outer->ino, "inner");
  ASSERT_NE(found_inner, nullptr);
  ASSERT_NE(lookup(tree, found_inner->ino, "f"), nullptr);
  EXPECT_EQ(contents(tree, lookup(tree, found_inner->ino, "f")), "kept");
  EXPECT_EQ(lookup(tree, found_inner->ino, "g"), nullptr);
  EXPECT_EQ(found_outer->nlink, 3u);
}

// Two half-durable cross-directory renames leave the durable maps with a directory named
// twice and a cycle (D1 -> X -> D1). The crash keeps the first name of each directory.
TEST(lossy_tree, crash_breaks_a_durable_directory_cycle) {
  lossy_tree tree({});
  node_ref root = tree.find(root_ino);
  node_ref d1 = make_dir(tree, root_ino, "d1");
  node_ref x = make_dir(tree, d1->ino, "x");
  tree.sync_directory(*root);
  tree.sync_directory(*d1);
  ASSERT_EQ(tree.rename(d1->ino, "x", root_ino, "y", 0), 0);
  tree.sync_directory(*root);
  ASSERT_EQ(tree.rename(root_ino, "d1", x->ino, "d1", 0), 0);
  tree.sync_directory(*x);
  tree.crash();
  EXPECT_EQ(lookup(tree, root_ino, "d1"), d1);
  EXPECT_EQ(lookup(tree, root_ino, "y"), x);
  EXPECT_TRUE(d1->entries.empty());
  EXPECT_TRUE(x->entries.empty());
  EXPECT_EQ(root->nlink, 4u);
  // The tree is a tree again: moving d1 under y works, and y under d1 after that is refused.
  EXPECT_EQ(tree.rename(root_ino, "d1", x->ino, "d1", 0), 0);
  EXPECT_EQ(tree.rename(root_ino, "y", d1->ino, "y", 0), EINVAL);
}

TEST(lossy_tree, nodes_are_freed_when_nothing_refers_to_them) {
  lossy_tree tree({});
  node_ref root = tree.find(root_ino);
  for (int i = 0; i < 100; ++i) make_file(tree, root_ino, std::to_string(i).c_str());
  tree.sync_directory(*root);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(tree.unlink(root_ino, std::to_string(i)), 0);
  EXPECT_EQ(tree.node_count(), 101u) << "durable names still hold the files";
  tree.sync_directory(*root);
  EXPECT_EQ(tree.node_count(), 1u);

  node_ref held = make_file(tree, root_ino, "held");
  write(tree, held, 0, std::string(1000, 'h'));
  tree.opened(*held);
  ASSERT_EQ(tree.unlink(root_ino, "held"), 0);
  EXPECT_EQ(tree.bytes_used(), 1000u) << "an open unlinked file keeps its bytes";
  const std::uint64_t ino = held->ino;
  tree.released(std::move(held));
  EXPECT_EQ(tree.find(ino), nullptr);
  EXPECT_EQ(tree.bytes_used(), 0u);
}

TEST(lossy_tree, kernel_lookups_keep_a_lost_node_until_forgotten) {
  lossy_tree tree({});
  node_ref lost = make_file(tree, root_ino, "lost");
  tree.add_lookup(*lost);
  const std::uint64_t ino = lost->ino;
  lost.reset();
  tree.crash();
  ASSERT_NE(tree.find(ino), nullptr);
  EXPECT_TRUE(tree.find(ino)->dead);
  attribute_change change;
  change.mode = true;
  EXPECT_EQ(tree.set_attributes(*tree.find(ino), change), ESTALE);
  tree.forget(ino, 1);
  EXPECT_EQ(tree.find(ino), nullptr);
}

TEST(lossy_tree, size_max_shortens_then_refuses) {
  lossy_tree tree({.bytes_max = 100});
  node_ref file = make_file(tree, root_ino, "f");
  const std::string chunk(60, 'x');
  EXPECT_EQ(tree.write(*file, 0, chunk.data(), chunk.size(), false), 60);
  EXPECT_EQ(tree.write(*file, 60, chunk.data(), chunk.size(), false), 40);
  EXPECT_EQ(tree.write(*file, 100, chunk.data(), chunk.size(), false), -ENOSPC);
  EXPECT_EQ(tree.write(*file, 0, chunk.data(), chunk.size(), false), 60) << "overwrite is free";
  attribute_change grow;
  grow.size = true;
  grow.size_bytes = 200;
  EXPECT_EQ(tree.set_attributes(*file, grow), ENOSPC);
  EXPECT_EQ(tree.allocate(*file, 0, 0, 101), ENOSPC);
  EXPECT_EQ(tree.allocate(*file, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 10), 0);
  EXPECT_EQ(contents(tree, file).substr(0, 11), std::string(10, '\0') + "x");
  EXPECT_EQ(tree.bytes_used(), 100u);
}

TEST(lossy_tree, rename_flags_and_links_count_after_a_crash) {
  lossy_tree tree({});
  node_ref root = tree.find(root_ino);
  node_ref a = make_file(tree, root_ino, "a");
  node_ref b = make_file(tree, root_ino, "b");
  node_ref linked;
  ASSERT_EQ(tree.link(a->ino, root_ino, "a2", linked), 0);
  EXPECT_EQ(a->nlink, 2u);
  EXPECT_EQ(tree.rename(root_ino, "a", root_ino, "b", RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(tree.rename(root_ino, "a", root_ino, "c", RENAME_EXCHANGE), ENOENT);
  EXPECT_EQ(tree.rename(root_ino, "a", root_ino, "b", RENAME_EXCHANGE), 0);
  EXPECT_EQ(lookup(tree, root_ino, "a"), b);
  EXPECT_EQ(tree.rename(root_ino, "a", root_ino, "a2", 0), 0);  // b replaces the link to a
  EXPECT_EQ(a->nlink, 1u);
  EXPECT_EQ(b->nlink, 1u);
  tree.sync_directory(*root);
  ASSERT_EQ(tree.unlink(root_ino, "b"), 0);
  tree.crash();
  EXPECT_EQ(lookup(tree, root_ino, "b"), a);
  EXPECT_EQ(lookup(tree, root_ino, "a2"), b);
  EXPECT_EQ(a->nlink, 1u);
  EXPECT_EQ(b->nlink, 1u);
}

}  // namespace
}  // namespace ringmta::lossyfs
