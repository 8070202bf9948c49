import type { ReactNode } from "react";
import { cn } from "../../lib/cn";

/** A column heading: its label, right-aligned for figures; with an `icon`, the icon is
 * shown and the label is left for screen readers. */
export type Column = string | { label: string; right?: boolean; icon?: ReactNode };

/** The header row of the app's data tables (the last column has no right padding). */
export function TableHead({ columns }: { columns: Column[] }) {
  return (
    <thead className="text-left text-muted-foreground">
      <tr>
        {columns.map((c, i) => {
          const { label, right, icon } = typeof c === "string" ? { label: c, right: false, icon: undefined } : c;
          return (
            <th key={label} className={cn("py-1 font-medium", i < columns.length - 1 && "pr-3", right && "text-right")}>
              {icon ? (
                <span className={cn("inline-flex", right && "justify-end")} title={label}>
                  {icon}
                  <span className="sr-only">{label}</span>
                </span>
              ) : (
                label
              )}
            </th>
          );
        })}
      </tr>
    </thead>
  );
}
