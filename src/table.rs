//! Every table the CLI prints, through one helper: columns as wide as their widest cell (an
//! id longer than usual widens its column instead of pushing the others), numbers aligned
//! right, no borders, text from outside shown with its control characters replaced.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and amounts.
    Right,
}

/// A table being built: a header of (title, alignment), then rows.
pub struct Printed {
    table: Table,
    aligns: Vec<Align>,
}

/// A table with these columns.
pub fn new(columns: &[(&str, Align)]) -> Printed {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(title, align)| cell(title, *align)));
    for (i, (_, align)) in columns.iter().enumerate() {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(alignment(*align));
        }
    }
    Printed {
        table,
        aligns: columns.iter().map(|c| c.1).collect(),
    }
}

impl Printed {
    /// Adds a row (one cell per column).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let row: Vec<Cell> = cells
            .into_iter()
            .zip(self.aligns.iter())
            .map(|(text, align)| cell(&crate::commands::shown(text.as_ref()), *align))
            .collect();
        self.table.add_row(row);
        self
    }

    /// The table as text, without trailing spaces.
    pub fn render(&self) -> String {
        self.table
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Prints it to stdout.
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

fn cell(text: &str, align: Align) -> Cell {
    Cell::new(text).set_alignment(alignment(align))
}

fn alignment(align: Align) -> CellAlignment {
    match align {
        Align::Left => CellAlignment::Left,
        Align::Right => CellAlignment::Right,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_cell_widens_its_column_and_numbers_align_right() {
        let mut t = new(&[
            ("user", Align::Left),
            ("amount", Align::Right),
            ("cur", Align::Left),
        ]);
        t.row(["alice-0001-with-a-long-id", "0.75000000", "btc"]);
        t.row(["bob", "-120.00", "eur"]);
        t.row(["eve\u{1b}[31m", "1.00", "eur"]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        // Every row's currency starts in the same column, whatever the user id's length.
        let at: Vec<usize> = lines[1..].iter().map(|l| l.rfind(' ').unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{out}");
        // Amounts end in the same column.
        let end = |line: &str, amount: &str| line.find(amount).unwrap() + amount.len();
        assert_eq!(
            end(lines[1], "0.75000000"),
            end(lines[2], "-120.00"),
            "{out}"
        );
        assert_eq!(end(lines[2], "-120.00"), end(lines[3], "1.00"), "{out}");
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[3].contains("eve?[31m"),
            "control characters are shown as ?: {out}"
        );
    }
}
