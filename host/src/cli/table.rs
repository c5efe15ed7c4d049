//! How the commands print: times, large numbers, progress.

use keel_host::jobs::store::TaskRecord;

/// Milliseconds since the epoch as UTC text, for tables (`-` for none).
pub fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// 100000 as "100,000".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line of progress: `[#########...........] 45% 45,000 / 100,000 units, 12 chunks, running`.
pub fn progress_line(task: &TaskRecord) -> String {
    let (done, chunks, status) = (task.done, task.chunks, task.status);
    match task.total {
        Some(total) if total > 0 => {
            let ratio = (done as f64 / total as f64).min(1.0);
            let filled = (ratio * 30.0).round() as usize;
            format!(
                "[{}{}] {:>3.0}% {} / {} units, {chunks} chunks, {status}",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                ratio * 100.0,
                grouped(done),
                grouped(total)
            )
        }
        _ => format!("{} units, {chunks} chunks, {status}", grouped(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!([grouped(0), grouped(999), grouped(1000), grouped(100_000)], ["0", "999", "1,000", "100,000"]);
    }
}
