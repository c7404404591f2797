//! The journal against a model: what was written and synced is what is read back, a torn or damaged tail
//! is cut to a prefix, positions go on after it, and damage anywhere else is an error, never a silent skip.

use super::*;
use proptest::prelude::*;

/// Cases of a property test: `default`, unless PROPTEST_CASES says otherwise.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh folder for one case.
fn folder(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "callgate-journal-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An owned record, for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Event {
        arrival: i64,
        connection: u64,
        server: String,
        line: Vec<u8>,
    },
    Tick(i64),
}

impl Owned {
    fn record(&self) -> Record<'_> {
        match self {
            Owned::Event {
                arrival,
                connection,
                server,
                line,
            } => Record::Event {
                arrival: *arrival,
                connection: *connection,
                server,
                line,
            },
            Owned::Tick(wall) => Record::Tick { wall: *wall },
        }
    }

    fn of(record: Record<'_>) -> Owned {
        match record {
            Record::Event {
                arrival,
                connection,
                server,
                line,
            } => Owned::Event {
                arrival,
                connection,
                server: server.to_owned(),
                line: line.to_vec(),
            },
            Record::Tick { wall } => Owned::Tick(wall),
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            any::<i64>(),
            1u64..5,
            "[A-Z0-9]{0,8}",
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(arrival, connection, server, line)| Owned::Event {
                arrival,
                connection,
                server,
                line
            }),
        any::<i64>().prop_map(Owned::Tick),
    ]
}

/// Appends `records` in batches of `batch`, writing and syncing each batch.
fn write_all(writer: &mut Writer, records: &[Owned], batch: usize) -> Vec<Position> {
    let mut positions = Vec::new();
    for chunk in records.chunks(batch.max(1)) {
        for record in chunk {
            positions.push(writer.append(&record.record()));
        }
        writer.write().expect("write");
        writer.sync().expect("sync");
    }
    positions
}

/// Every record from `from` on, with its position.
fn read_from(dir: &Path, from: Position) -> Result<Vec<(Position, Owned)>, JournalError> {
    let mut reader = Reader::open(dir, from)?;
    let mut read = Vec::new();
    while let Some(position) = reader.advance()? {
        read.push((position, Owned::of(reader.record())));
    }
    Ok(read)
}

fn numbered(records: &[Owned], first: Position) -> Vec<(Position, Owned)> {
    (first..).zip(records.iter().cloned()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn what_is_written_is_read_back_in_order_across_segments(
        records in proptest::collection::vec(owned(), 0..60),
        batch in 1usize..10,
        rotate_at in 64u64..2_000,
        from in 1u64..70,
    ) {
        let dir = folder("roundtrip");
        let mut opened = open(&dir, rotate_at).expect("open");
        let positions = write_all(&mut opened.writer, &records, batch);
        prop_assert_eq!(positions, (1..=records.len() as u64).collect::<Vec<_>>());
        drop(opened);
        prop_assert_eq!(read_from(&dir, 1).expect("read"), numbered(&records, 1));
        let tail: Vec<_> = numbered(&records, 1).into_iter().filter(|(p, _)| *p >= from).collect();
        prop_assert_eq!(read_from(&dir, from).expect("read"), tail);
        // Reopened, it goes on where it stopped.
        let reopened = open(&dir, rotate_at).expect("reopen");
        prop_assert_eq!(reopened.writer.next_position(), records.len() as u64 + 1);
        prop_assert!(reopened.repaired.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_to_the_last_whole_entry_and_positions_go_on(
        records in proptest::collection::vec(owned(), 1..40),
        more in proptest::collection::vec(owned(), 1..10),
        rotate_at in 64u64..2_000,
        cut_fraction in 0.0f64..1.0,
    ) {
        let dir = folder("torn");
        let mut opened = open(&dir, rotate_at).expect("open");
        write_all(&mut opened.writer, &records, 3);
        drop(opened);
        let segments = segment::list(&dir).expect("list");
        let last = segments.last().expect("a segment").clone();
        let length = std::fs::metadata(&last.path).expect("length").len();
        let magic = segment::MAGIC.len() as u64;
        let cut_to = magic + ((length - magic) as f64 * cut_fraction) as u64;
        std::fs::OpenOptions::new().write(true).open(&last.path).expect("open")
            .set_len(cut_to).expect("cut");
        // The whole entries left are a prefix of what was written.
        let kept = segment::scan(&last.path).expect("scan").entries + last.first - 1;
        let mut reopened = open(&dir, rotate_at).expect("reopen");
        let whole = segment::scan(&last.path).expect("scan").whole;
        prop_assert_eq!(reopened.repaired.is_some(), cut_to != whole);
        prop_assert_eq!(std::fs::metadata(&last.path).expect("length").len(), whole);
        prop_assert_eq!(reopened.writer.next_position(), kept + 1);
        write_all(&mut reopened.writer, &more, 2);
        drop(reopened);
        let mut expected = numbered(&records[..kept as usize], 1);
        expected.extend(numbered(&more, kept + 1));
        prop_assert_eq!(read_from(&dir, 1).expect("read"), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error_naming_where(
        records in proptest::collection::vec(owned(), 10..40),
        at_fraction in 0.0f64..1.0,
    ) {
        let dir = folder("damage");
        let mut opened = open(&dir, 256).expect("open");
        write_all(&mut opened.writer, &records, 1);
        drop(opened);
        let segments = segment::list(&dir).expect("list");
        prop_assume!(segments.len() >= 2);
        let first = &segments[0].path;
        let mut bytes = std::fs::read(first).expect("read");
        let magic = segment::MAGIC.len();
        let at = magic + ((bytes.len() - magic) as f64 * at_fraction) as usize;
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x5a;
        std::fs::write(first, &bytes).expect("write");
        match read_from(&dir, 1) {
            Err(JournalError::Corrupt { path, offset, .. }) => {
                prop_assert_eq!(&path, first);
                prop_assert!(offset as usize <= at);
            }
            other => prop_assert!(false, "expected Corrupt, got {:?}", other.map(|r| r.len())),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_epoch_is_made_once_and_kept() {
    let dir = folder("epoch");
    assert_eq!(epoch(&dir, || "first".into()).expect("epoch"), "first");
    assert_eq!(epoch(&dir, || "second".into()).expect("epoch"), "first");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_segment_whose_magic_never_reached_the_disk_is_dropped() {
    let dir = folder("magic");
    let mut opened = open(&dir, 64).expect("open");
    let records: Vec<Owned> = (0..5).map(Owned::Tick).collect();
    write_all(&mut opened.writer, &records, 1);
    drop(opened);
    let next = dir.join(segment::name(6));
    std::fs::write(&next, &segment::MAGIC[..4]).expect("a torn new segment");
    let reopened = open(&dir, 64).expect("reopen");
    assert_eq!(reopened.writer.next_position(), 6);
    assert!(!next.exists());
    let read: Vec<Position> = read_from(&dir, 1)
        .expect("read")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(read, vec![1, 2, 3, 4, 5]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_is_not_a_segment_is_refused() {
    let dir = folder("foreign");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(segment::name(1)), b"something else entirely").expect("write");
    assert!(matches!(
        open(&dir, ROTATE_AT),
        Err(JournalError::NotAJournal(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damage_in_the_last_segment_is_cut_from_the_damaged_entry() {
    let dir = folder("last");
    let mut opened = open(&dir, ROTATE_AT).expect("open");
    let records: Vec<Owned> = (0..10).map(Owned::Tick).collect();
    write_all(&mut opened.writer, &records, 1);
    drop(opened);
    let path = segment::list(&dir).expect("list")[0].path.clone();
    let mut bytes = std::fs::read(&path).expect("read");
    // The seventh entry's time: every tick entry is the same length.
    let entry = (bytes.len() - segment::MAGIC.len()) / 10;
    let seventh = segment::MAGIC.len() + 6 * entry;
    bytes[seventh + entry - 1] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let reopened = open(&dir, ROTATE_AT).expect("reopen");
    let repair = reopened.repaired.clone().expect("repaired");
    assert_eq!(repair.offset, seventh as u64);
    assert_eq!(repair.cut, 4 * entry as u64);
    assert_eq!(repair.why, entry::EntryError::BadChecksum);
    assert_eq!(reopened.writer.next_position(), 7);
    let _ = std::fs::remove_dir_all(&dir);
}
