import { cn } from "../../lib/cn";

/** A column heading: its label, right-aligned for figures. */
export type Column = string | { label: string; right?: boolean };

/** The header row of the app's data tables (the last column has no right padding). */
export function TableHead({ columns }: { columns: Column[] }) {
  return (
    <thead className="text-left text-muted-foreground">
      <tr>
        {columns.map((c, i) => {
          const { label, right } = typeof c === "string" ? { label: c, right: false } : c;
          return (
            <th key={label} className={cn("py-1 font-medium", i < columns.length - 1 && "pr-3", right && "text-right")}>
              {label}
            </th>
          );
        })}
      </tr>
    </thead>
  );
}
